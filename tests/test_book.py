"""segnotes.book.glue: myst-nb's glue record, plus an ordinary output that Jupyter and Colab show."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from segnotes.book import GLUE_PREFIX, glue  # noqa: E402


def glued(*args, **kwargs) -> list[nbformat.NotebookNode]:
    """The display_data outputs one glue call writes, as a notebook stores them."""
    InteractiveShell.instance()
    with capture_output() as captured:
        glue(*args, **kwargs)
    return [nbformat.v4.new_output("display_data", data=o.data, metadata=o.metadata) for o in captured.outputs]


def test_hidden_value_is_recorded_and_visible_in_jupyter():
    (output,) = glued("mean_iu", 0.825, display=False)
    assert output.data[GLUE_PREFIX + "text/plain"] == "0.825"
    assert output.data["text/plain"] == "mean_iu = 0.825"  # what Jupyter and Colab show
    assert output.metadata["scrapbook"] == {"name": "mean_iu", "mime_prefix": GLUE_PREFIX}


def test_displayed_value_is_an_ordinary_output():
    (output,) = glued("n", 3)
    assert output.data == {"text/plain": "3"}
    assert output.metadata["scrapbook"] == {"name": "n", "mime_prefix": ""}


def test_hidden_figure_shows_its_image_in_jupyter():
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(InteractiveShell.instance(), {"png"})  # as %matplotlib inline does
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    (output,) = glued("curve", fig, display=False)
    plt.close(fig)
    assert output.data["image/png"] == output.data[GLUE_PREFIX + "image/png"]
    assert output.data["text/plain"] == "[figure curve]"


def test_myst_nb_reads_the_value_and_drops_the_output_from_the_page():
    extract = pytest.importorskip("myst_nb.ext.glue").extract_glue_data_cell
    cell = nbformat.v4.new_code_cell("glue(...)", outputs=glued("mean_iu", 0.825, display=False) + glued("n", 3))
    data = dict(extract(cell))
    assert data["mean_iu"].data["text/plain"] == "0.825"  # what {glue:text}`mean_iu` renders
    assert [o.metadata["scrapbook"]["name"] for o in cell.outputs] == ["n"]  # the hidden one left the page


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="glue: name must be a non-empty str, got 3"):
        glue(3, 0.5)


def chapters():
    import json
    from pathlib import Path

    book = Path(__file__).resolve().parents[1] / "book"
    if not book.is_dir():
        pytest.skip("not a source checkout")
    return {p.name: json.loads(p.read_text()) for p in sorted(book.glob("*.ipynb"))}


def test_every_chapter_installs_the_books_version_and_needs_nothing_book_only():
    import segnotes

    for name, notebook in chapters().items():
        code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
        assert f'git+https://github.com/segnotes/segnotes@v{segnotes.__version__}"' in code[0], name
        assert not any("myst_nb" in source for source in code), f"{name} imports myst_nb (book-only)"


def test_package_version_matches_pyproject():
    import tomllib
    from pathlib import Path

    import segnotes

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == segnotes.__version__


def test_table_is_numbered_myst_in_the_book_and_captioned_html_in_jupyter():
    from segnotes.book import table

    t = table("| net | mean IU |\n|---|---:|\n| **FCN-8s** | 82.2 |", caption="Mean IU, $x$.", name="tbl-fcn")
    assert t._repr_markdown_() == (":::{table} Mean IU, $x$.\n:name: tbl-fcn\n\n"
                                   "| net | mean IU |\n|---|---:|\n| **FCN-8s** | 82.2 |\n:::\n")
    html = t._repr_html_()
    assert html.startswith("<table><caption>Mean IU, $x$.</caption>")
    assert '<td style="text-align:left"><b>FCN-8s</b></td><td style="text-align:right">82.2</td>' in html
    same = table(["net", "mean IU"], [["**FCN-8s**", 82.2]], caption="Mean IU, $x$.", name="tbl-fcn",
                 align=["", "right"])
    assert same.markdown() == t.markdown()


def test_table_bad_input():
    from segnotes.book import table

    with pytest.raises(TypeError, match=r"table: caption must be a non-empty str"):
        table(["a"], [[1]], caption="")
    with pytest.raises(ValueError, match=r"table: row 0 has 2 cells, the header 1"):
        table(["a"], [[1, 2]], caption="c")
    with pytest.raises(ValueError, match=r"table: expected a Markdown pipe table"):
        table("just text", caption="c")
