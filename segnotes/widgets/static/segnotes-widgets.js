// segnotes widgets in a page without a kernel (the HTML book).
//
// Each <div class="sn-widget" data-kind="..."> holds its state as JSON (written by FigureWidget.static_html,
// see segnotes/widgets/_static.py): the controls, with every value each can take, and the data needed to redraw.
// This script builds the controls and, when one moves, redraws the picture and the numbers in the page:
//   mask-comparison   recomputes perturb_mask (shift, dilate/erode, coarsen + upsample) and the metrics;
//   model-comparison  shows the pictures drawn for the image and score threshold, and the scores;
//   ap-explorer       recomputes the matches shown and the precision-recall curve from COCO's match table.
// After each redraw the widget's numbers are in its data-result attribute (JSON), which the browser tests
// compare with the Python widget's for the same control values. No network, no dependencies.
(function () {
  "use strict";

  // ------------------------------------------------------------------------------------------- helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Run lengths over row-major pixels, alternating 0 and 1 and starting with 0 -> Uint8Array of 0/1.
  function decodeRuns(runs, size) {
    const out = new Uint8Array(size);
    let position = 0;
    let value = 0;
    for (const run of runs) {
      if (value) out.fill(1, position, position + run);
      position += run;
      value ^= 1;
    }
    return out;
  }

  // base64 PNG -> {width, height, rgba: Uint8ClampedArray}
  function decodePng(base64) {
    return new Promise(function (resolve, reject) {
      const image = new Image();
      image.onload = function () {
        const canvas = document.createElement("canvas");
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
        const context = canvas.getContext("2d");
        context.drawImage(image, 0, 0);
        resolve({ width: canvas.width, height: canvas.height,
                  rgba: context.getImageData(0, 0, canvas.width, canvas.height).data });
      };
      image.onerror = function () { reject(new Error("segnotes widget: a picture did not decode")); };
      image.src = "data:image/png;base64," + base64;
    });
  }

  // A canvas showing an RGBA buffer at its own resolution; CSS scales it up with square pixels.
  function pixelCanvas(width, height, className) {
    const canvas = el("canvas", "sn-pixels" + (className ? " " + className : ""));
    canvas.width = width;
    canvas.height = height;
    return canvas;
  }

  function putPixels(canvas, rgba) {
    const context = canvas.getContext("2d");
    const image = context.createImageData(canvas.width, canvas.height);
    image.data.set(rgba);
    context.putImageData(image, 0, 0);
  }

  function fmt(value) {  // as segnotes.viz.compare._fmt
    return value === null || value === undefined || Number.isNaN(value) || value < 0 ? "n/a" : value.toFixed(3);
  }

  function signed(value) {  // as segnotes.viz.compare._signed
    if (value === null || Number.isNaN(value)) return "n/a";
    return (value >= 0 ? "+" : "-") + Math.abs(value).toFixed(3);
  }

  function rgbCss(color) {
    return "rgb(" + color[0] + "," + color[1] + "," + color[2] + ")";
  }

  function nanmean(values) {
    const kept = values.filter(function (v) { return !Number.isNaN(v); });
    return kept.length ? kept.reduce(function (a, b) { return a + b; }, 0) / kept.length : NaN;
  }

  // JSON has no NaN: the page writes null for it, as the state does.
  function jsonResult(result) {
    return JSON.stringify(result, function (key, value) {
      return typeof value === "number" && !Number.isFinite(value) ? null : value;
    });
  }

  // ------------------------------------------------------------------------------------------- controls

  function buildControls(spec, rows, onChange) {
    const values = {};
    const nodes = {};
    for (const control of spec) {
      values[control.name] = control.values[control.index];
      const wrap = el("div", "sn-control");
      const label = el("span", "sn-label", control.label);
      wrap.appendChild(label);
      if (control.type === "range") {
        const input = el("input");
        input.type = "range";
        input.min = "0";
        input.max = String(control.values.length - 1);
        input.step = "1";
        input.value = String(control.index);
        input.dataset.name = control.name;
        input.setAttribute("aria-label", control.label);
        const readout = el("span", "sn-readout", control.labels[control.index]);
        input.addEventListener("input", function () {
          const index = Number(input.value);
          values[control.name] = control.values[index];
          readout.textContent = control.labels[index];
          onChange();
        });
        wrap.appendChild(input);
        wrap.appendChild(readout);
      } else if (control.type === "select") {
        const select = el("select");
        select.dataset.name = control.name;
        select.setAttribute("aria-label", control.label);
        control.labels.forEach(function (text, index) {
          const option = el("option", null, text);
          option.value = String(index);
          select.appendChild(option);
        });
        select.value = String(control.index);
        select.addEventListener("change", function () {
          values[control.name] = control.values[Number(select.value)];
          onChange();
        });
        wrap.appendChild(select);
      } else {  // toggle: one button per option, the chosen one pressed
        const group = el("span", "sn-toggle");
        group.dataset.name = control.name;
        group.setAttribute("role", "group");
        group.setAttribute("aria-label", control.label);
        const buttons = control.labels.map(function (text, index) {
          const button = el("button", "sn-option", text);
          button.type = "button";
          button.setAttribute("aria-pressed", String(index === control.index));
          button.addEventListener("click", function () {
            buttons.forEach(function (other, i) { other.setAttribute("aria-pressed", String(i === index)); });
            values[control.name] = control.values[index];
            onChange();
          });
          group.appendChild(button);
          return button;
        });
        wrap.appendChild(group);
      }
      nodes[control.name] = wrap;
    }
    const box = el("div", "sn-controls");
    for (const row of rows) {
      const line = el("div", "sn-row");
      for (const name of row) line.appendChild(nodes[name]);
      box.appendChild(line);
    }
    return { box: box, values: values };
  }

  // --------------------------------------------------------------------------------- mask comparison

  // perturb_mask (segnotes/viz/compare.py), on Uint8Array masks of height x width.
  function shiftMask(mask, height, width, dy, dx) {
    const out = new Uint8Array(height * width);
    for (let y = Math.max(dy, 0); y < Math.min(height, height + dy); y++) {
      const from = (y - dy) * width;
      for (let x = Math.max(dx, 0); x < Math.min(width, width + dx); x++) out[y * width + x] = mask[from + x - dx];
    }
    return out;
  }

  // Dilate by a disk of radius r (a pixel joins when a mask pixel lies within distance r); r < 0 erodes: a pixel
  // stays when the whole disk around it is mask, and outside the image counts as background.
  function dilateMask(mask, height, width, r) {
    const radius = Math.abs(r);
    const offsets = [];
    for (let dy = -radius; dy <= radius; dy++)
      for (let dx = -radius; dx <= radius; dx++) if (dy * dy + dx * dx <= radius * radius) offsets.push([dy, dx]);
    const out = new Uint8Array(height * width);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let any = false;
        let all = true;
        for (const [dy, dx] of offsets) {
          const yy = y + dy;
          const xx = x + dx;
          const inside = yy >= 0 && yy < height && xx >= 0 && xx < width && mask[yy * width + xx] === 1;
          if (inside) any = true; else all = false;
          if (r > 0 ? any : !all) break;
        }
        out[y * width + x] = (r > 0 ? any : all) ? 1 : 0;
      }
    }
    return out;
  }

  // avg_pool2d over factor x factor cells (ceil mode: a cell cut by the border averages the pixels inside), then
  // upsampling by factor (bilinear with align_corners=False, or nearest), cropped and thresholded at 0.5.
  // torch computes in float32: Math.fround keeps the same values (they are exact for power-of-two factors).
  function coarsenMask(mask, height, width, factor, upsample) {
    const f32 = Math.fround;
    const rows = Math.ceil(height / factor);
    const cols = Math.ceil(width / factor);
    const coarse = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        let sum = 0;
        const y1 = Math.min((i + 1) * factor, height);
        const x1 = Math.min((j + 1) * factor, width);
        for (let y = i * factor; y < y1; y++) for (let x = j * factor; x < x1; x++) sum += mask[y * width + x];
        coarse[i * cols + j] = f32(sum / ((y1 - i * factor) * (x1 - j * factor)));
      }
    }
    const scale = f32(1 / factor);
    function source(index, size) {  // input index and weight of the next one, as torch's linear upsampling
      const real = Math.max(f32(f32(scale * (index + 0.5)) - 0.5), 0);
      const low = Math.floor(real);
      return [low, low < size - 1 ? low + 1 : low, f32(real - low)];
    }
    const out = new Uint8Array(height * width);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let value;
        if (upsample === "nearest") {
          value = coarse[Math.min(Math.floor(y * scale), rows - 1) * cols + Math.min(Math.floor(x * scale), cols - 1)];
        } else {
          const [y0, y1, ly] = source(y, rows);
          const [x0, x1, lx] = source(x, cols);
          const hy = f32(1 - ly);
          const hx = f32(1 - lx);
          value = f32(f32(hy * f32(f32(hx * coarse[y0 * cols + x0]) + f32(lx * coarse[y0 * cols + x1]))) +
                      f32(ly * f32(f32(hx * coarse[y1 * cols + x0]) + f32(lx * coarse[y1 * cols + x1]))));
        }
        out[y * width + x] = value > 0.5 ? 1 : 0;
      }
    }
    return out;
  }

  function perturbMask(mask, height, width, v) {
    let out = shiftMask(mask, height, width, v.shift_y, v.shift_x);
    if (v.dilate !== 0) out = dilateMask(out, height, width, v.dilate);
    if (v.coarsen > 1) out = coarsenMask(out, height, width, v.coarsen, v.upsample);
    return out;
  }

  // _binary_scores: the two-class (background, object) confusion matrix and the FCN metrics, ignored pixels out.
  function binaryScores(prediction, target, ignore) {
    let tp = 0, fp = 0, fn = 0, tn = 0;
    for (let i = 0; i < target.length; i++) {
      if (ignore && ignore[i]) continue;
      if (target[i]) { if (prediction[i]) tp++; else fn++; } else if (prediction[i]) fp++; else tn++;
    }
    // rows: truth (background, object); columns: prediction
    const correct = [tn, tp];
    const trueTotal = [tn + fp, fn + tp];
    const predTotal = [tn + fn, fp + tp];
    const pixels = trueTotal[0] + trueTotal[1];
    const accuracy = [0, 1].map(function (c) { return correct[c] / trueTotal[c]; });
    const iu = [0, 1].map(function (c) { return correct[c] / (trueTotal[c] + predTotal[c] - correct[c]); });
    let weighted = 0;
    for (const c of [0, 1]) if (trueTotal[c] > 0) weighted += trueTotal[c] * iu[c];
    return {
      iou: iu[1],
      pixel_accuracy: (correct[0] + correct[1]) / pixels,
      mean_accuracy: nanmean(accuracy),
      mean_iu: nanmean(iu),
      frequency_weighted_iu: weighted / pixels,
      true_positives: tp,
      false_positives: fp,
      false_negatives: fn,
      true_negatives: tn,
    };
  }

  const SCORE_ROWS = [["iou", "object IoU"], ["pixel_accuracy", "pixel accuracy"], ["mean_accuracy", "mean accuracy"],
                      ["mean_iu", "mean IU"], ["frequency_weighted_iu", "f.w. IU"]];

  async function maskComparison(root, state, picture) {
    const d = state.data;
    const height = d.height;
    const width = d.width;
    const size = height * width;
    const base = (await decodePng(d.base)).rgba;
    const target = decodeRuns(d.target, size);
    const prediction = decodeRuns(d.prediction, size);
    const ignore = d.ignore ? decodeRuns(d.ignore, size) : null;
    const colors = d.colors;

    function paint(rgba, index, color) {
      rgba[4 * index] = color[0]; rgba[4 * index + 1] = color[1]; rgba[4 * index + 2] = color[2];
    }
    function maskPixels(mask) {  // _MaskComparisonPlot._mask_rgb
      const rgba = new Uint8ClampedArray(base);
      for (let i = 0; i < size; i++) {
        if (mask[i]) paint(rgba, i, colors.mask);
        if (ignore && ignore[i]) paint(rgba, i, colors.ignored);
      }
      return rgba;
    }
    function outcomePixels(predicted) {  // _outcome_rgb
      const rgba = new Uint8ClampedArray(base);
      for (let i = 0; i < size; i++) {
        if (predicted[i] && target[i]) paint(rgba, i, colors["true positive"]);
        else if (predicted[i]) paint(rgba, i, colors["false positive"]);
        else if (target[i]) paint(rgba, i, colors["false negative"]);
        if (ignore && ignore[i]) paint(rgba, i, colors.ignored);
      }
      return rgba;
    }

    const panels = ["ground truth", "prediction", "outcome"].map(function (title) {
      const panel = el("figure", "sn-panel");
      const canvas = pixelCanvas(width, height);
      const caption = el("figcaption", null, title);
      panel.appendChild(caption);
      panel.appendChild(canvas);
      picture.appendChild(panel);
      return { canvas: canvas, caption: caption };
    });
    putPixels(panels[0].canvas, maskPixels(target));
    const bars = el("div", "sn-bars");
    const barNodes = SCORE_ROWS.map(function (row, index) {
      const line = el("div", "sn-bar-row");
      line.appendChild(el("span", "sn-bar-label", row[1]));
      const track = el("span", "sn-bar-track");
      const bar = el("span", "sn-bar");
      bar.style.background = index === 0 ? rgbCss(colors["true positive"]) : "rgb(140,140,140)";
      track.appendChild(bar);
      line.appendChild(track);
      const value = el("span", "sn-bar-value");
      line.appendChild(value);
      bars.appendChild(line);
      return { bar: bar, value: value };
    });
    picture.appendChild(bars);
    const legend = el("div", "sn-legend");
    for (const name of ["true positive", "false positive", "false negative", "ignored"]) {
      const key = el("span", "sn-key");
      const swatch = el("span", "sn-swatch");
      swatch.style.background = rgbCss(colors[name]);
      key.appendChild(swatch);
      key.appendChild(document.createTextNode(name));
      legend.appendChild(key);
    }
    picture.appendChild(legend);

    return function draw(v) {
      const predicted = perturbMask(prediction, height, width, v);
      putPixels(panels[1].canvas, maskPixels(predicted));
      putPixels(panels[2].canvas, outcomePixels(predicted));
      const parts = [(v.shift_y || v.shift_x) ? "shift (" + v.shift_y + ", " + v.shift_x + ")" : "",
                     v.dilate ? "dilate " + v.dilate : "",
                     v.coarsen > 1 ? "stride " + v.coarsen + " (" + v.upsample + ")" : ""].filter(Boolean);
      panels[1].caption.textContent = parts.join(", ") || "prediction";
      const scores = binaryScores(predicted, target, ignore);
      SCORE_ROWS.forEach(function (row, index) {
        const value = scores[row[0]];
        barNodes[index].bar.style.width = (Number.isNaN(value) ? 0 : 100 * value) + "%";
        barNodes[index].value.textContent = fmt(value);
      });
      return { result: scores,
               text: "TP " + scores.true_positives + " · FP " + scores.false_positives + " · FN " +
                     scores.false_negatives + " pixels" };
    };
  }

  // --------------------------------------------------------------------------------- model comparison

  // segnotes.viz.instance_colors: golden-ratio hue steps, HSV(h, 0.85, 1), as float32 like numpy's array.
  function instanceColors(count) {
    const colors = [];
    for (let n = 0; n < count; n++) {
      const h = (n * 0.618033988749895) % 1.0;
      const i = Math.floor(h * 6.0) % 6, f = h * 6.0 - Math.floor(h * 6.0);
      const v = 1.0, p = 1.0 - 0.85, q = 1.0 - 0.85 * f, t = 1.0 - 0.85 * (1.0 - f);
      const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i];
      colors.push(rgb.map(Math.fround));
    }
    return colors;
  }

  function toByte(value) {  // segnotes.viz.compare._rgba8, in float32: clip, * 255 + 0.5, truncate
    return Math.floor(Math.fround(Math.fround(Math.min(Math.max(value, 0), 1) * 255) + 0.5));
  }

  async function modelComparison(root, state, picture) {
    const d = state.data;
    const frames = await Promise.all(d.frames.map(function (frame) { return decodePng(frame.png); }));
    const first = frames[0];
    const size = first.width * first.height;
    const panels = d.titles.map(function (title) {
      const panel = el("figure", "sn-panel");
      const caption = el("figcaption", null, title);
      const canvas = el("canvas", "sn-pixels");
      canvas.width = first.width * d.box_scale;
      canvas.height = first.height * d.box_scale;
      panel.appendChild(caption);
      panel.appendChild(canvas);
      picture.appendChild(panel);
      return { canvas: canvas, caption: caption };
    });
    const chart = el("canvas", "sn-chart");
    chart.width = 640;
    chart.height = 170;
    const summary = el("div", "sn-summary");
    picture.appendChild(summary);
    picture.appendChild(chart);
    const difference = d.scores[0].map(function (a, i) {
      const b = d.scores[1][i];
      return a === null || b === null ? NaN : b - a;
    });
    const masks = new Map();  // decoded detection masks, by detection object

    function show(panel, pixels, boxes) {  // pixels: RGBA at the images' resolution; boxes in pixel edges
      const scratch = pixelCanvas(first.width, first.height);
      putPixels(scratch, pixels);
      const context = panel.canvas.getContext("2d");
      context.imageSmoothingEnabled = false;
      context.drawImage(scratch, 0, 0, panel.canvas.width, panel.canvas.height);
      const s = d.box_scale;
      context.lineWidth = 1;
      for (const box of boxes) {  // [x1, y1, x2, y2, r, g, b]
        context.strokeStyle = rgbCss(box.slice(4, 7));
        context.strokeRect(box[0] * s + 0.5, box[1] * s + 0.5, (box[2] - box[0]) * s, (box[3] - box[1]) * s);
      }
    }

    // A model's panel: the kept detections blended on the image in instance colours (overlay_instances).
    function instancePanel(imagePixels, detections, threshold) {
      const limit = Math.fround(threshold);  // torch compares float32 scores with the threshold in float32
      const kept = detections.filter(function (det) { return det.score >= limit; });
      const colors = instanceColors(kept.length);
      const alpha = d.overlay_alpha;
      const keep = Math.fround(1 - alpha), take = Math.fround(alpha);
      const rgb = new Float32Array(size * 3);
      for (let i = 0; i < size; i++) for (let k = 0; k < 3; k++) rgb[3 * i + k] = Math.fround(imagePixels[4 * i + k] / 255);
      kept.forEach(function (det, n) {
        if (!masks.has(det)) masks.set(det, decodeRuns(det.mask, size));
        const mask = masks.get(det);
        for (let i = 0; i < size; i++) {
          if (!mask[i]) continue;
          for (let k = 0; k < 3; k++) {
            rgb[3 * i + k] = Math.fround(Math.fround(keep * rgb[3 * i + k]) + Math.fround(take * colors[n][k]));
          }
        }
      });
      const rgba = new Uint8ClampedArray(size * 4);
      for (let i = 0; i < size; i++) {
        for (let k = 0; k < 3; k++) rgba[4 * i + k] = toByte(rgb[3 * i + k]);
        rgba[4 * i + 3] = 255;
      }
      const boxes = kept.map(function (det, n) { return det.box.concat(colors[n].map(toByte)); });
      return { pixels: rgba, boxes: boxes, shown: kept.length };
    }

    function drawChart(selected) {
      const context = chart.getContext("2d");
      const w = chart.width, h = chart.height, left = 56, bottom = 22, top = 8;
      context.clearRect(0, 0, w, h);
      const finite = difference.filter(function (v) { return !Number.isNaN(v); });
      const extent = Math.max(0.05, ...finite.map(Math.abs));
      const y = function (v) { return top + (h - top - bottom) * (extent - v) / (2 * extent); };
      const step = (w - left - 8) / difference.length;
      context.strokeStyle = "rgb(77,77,77)";
      context.beginPath(); context.moveTo(left, y(0)); context.lineTo(w - 8, y(0)); context.stroke();
      context.fillStyle = "rgb(60,60,60)";
      context.font = "10px sans-serif";
      context.textAlign = "right";
      context.fillText("+" + extent.toFixed(2), left - 4, y(extent) + 8);
      context.fillText("-" + extent.toFixed(2), left - 4, y(-extent));
      context.textAlign = "center";
      difference.forEach(function (value, i) {
        const v = Number.isNaN(value) ? 0 : value;
        const x = left + i * step + step * 0.15;
        context.fillStyle = rgbCss(v >= 0 ? d.colors[1] : d.colors[0]);
        context.fillRect(x, Math.min(y(0), y(v)), step * 0.7, Math.abs(y(v) - y(0)));
        if (i === selected) {
          context.strokeStyle = "black";
          context.lineWidth = 1.5;
          context.strokeRect(x, Math.min(y(0), y(v)) - 1, step * 0.7, Math.abs(y(v) - y(0)) + 2);
        }
        context.fillStyle = "rgb(60,60,60)";
        context.fillText(String(i), x + step * 0.35, h - 6);
      });
    }

    return function draw(v) {
      const index = v.image;
      const item = d.images[index];
      item.panels.forEach(function (f, p) { show(panels[p], frames[f].rgba, d.frames[f].boxes); });
      const result = { index: index, scores: [d.scores[0][index], d.scores[1][index]], totals: d.totals };
      if (d.mode === "instance") {
        result.shown = item.detections.map(function (detections, side) {
          const drawn = instancePanel(frames[item.panels[0]].rgba, detections, v.score_threshold);
          show(panels[d.model_panels[side]], drawn.pixels, drawn.boxes);
          return drawn.shown;
        });
      }
      const scores = result.scores;
      d.model_panels.forEach(function (p, side) {
        panels[p].caption.textContent = d.names[side] + ": " + d.score_name + " " + fmt(scores[side]);
      });
      let text = "image " + index + ": " + d.names[1] + " − " + d.names[0] + " = " +
                 signed(scores[0] === null || scores[1] === null ? NaN : scores[1] - scores[0]);
      if (d.totals[0] !== null) {
        text += "   ·   all images: " + d.names[0] + " " + fmt(d.totals[0]) + ", " + d.names[1] + " " + fmt(d.totals[1]);
      }
      if (result.shown) text += "   ·   shown: " + d.names[0] + " " + result.shown[0] + ", " + d.names[1] + " " + result.shown[1];
      summary.textContent = text;
      drawChart(index);
      return { result: result, text: "" };
    };
  }

  // ------------------------------------------------------------------------------------- AP explorer

  // segnotes.viz.pr._curve: one category's precision-recall curve at threshold index t.
  function prCurve(category, t, recallThresholds) {
    const scores = [];
    const truePositive = [];
    category.scores.forEach(function (score, i) {
      const status = category.status[i][t];
      if (status === "I") return;  // matched a crowd region: neither TP nor FP
      scores.push(score);
      truePositive.push(status === "T");
    });
    const positives = category.num_positives;
    const recall = [], precision = [];
    let tp = 0, fp = 0;
    truePositive.forEach(function (hit) {
      if (hit) tp++; else fp++;
      recall.push(positives ? tp / positives : NaN);
      precision.push(tp / Math.max(tp + fp, 1));
    });
    const envelope = precision.slice();
    for (let i = envelope.length - 2; i >= 0; i--) envelope[i] = Math.max(envelope[i], envelope[i + 1]);
    const interpolated = recallThresholds.map(function (r) {
      if (!positives) return 0;
      let low = 0, high = recall.length;  // first i with recall[i] >= r (searchsorted, side left)
      while (low < high) { const mid = (low + high) >> 1; if (recall[mid] < r) low = mid + 1; else high = mid; }
      return low < recall.length ? envelope[low] : 0;
    });
    const ap = positives ? interpolated.reduce(function (a, b) { return a + b; }, 0) / interpolated.length : -1;
    return { scores: scores, recall: recall, precision: precision, envelope: envelope, interpolated: interpolated,
             num_positives: positives, ap: ap };
  }

  function operatingPoint(curve, threshold) {  // _operating_point: the detections scored >= threshold
    let kept = 0;
    while (kept < curve.scores.length && curve.scores[kept] >= threshold) kept++;
    if (kept === 0 || !curve.num_positives) return null;
    return [curve.recall[kept - 1], curve.precision[kept - 1], kept];
  }

  async function apExplorer(root, state, picture) {
    const d = state.data;
    const images = await Promise.all(d.images.map(function (item) { return decodePng(item.base); }));
    const curves = {};
    function curve(k, t) {  // k: position in d.categories
      const key = k + ":" + t;
      if (!(key in curves)) curves[key] = prCurve(d.categories[k], t, d.recall_thresholds);
      return curves[key];
    }
    const left = el("figure", "sn-panel sn-detections");
    const leftTitle = el("figcaption");
    const canvas = el("canvas", "sn-pixels");
    left.appendChild(leftTitle);
    left.appendChild(canvas);
    const right = el("figure", "sn-panel sn-curve");
    const rightTitle = el("figcaption");
    const chart = el("canvas", "sn-chart");
    chart.width = 420;
    chart.height = 330;
    right.appendChild(rightTitle);
    right.appendChild(chart);
    picture.appendChild(left);
    picture.appendChild(right);
    const legend = el("div", "sn-legend");
    for (const [name, color] of Object.entries(d.legend)) {
      const key = el("span", "sn-key");
      const swatch = el("span", "sn-swatch");
      swatch.style.background = rgbCss(color);
      key.appendChild(swatch);
      key.appendChild(document.createTextNode(name));
      legend.appendChild(key);
    }
    picture.appendChild(legend);
    const scale = d.box_scale;

    function drawDetections(index, t, threshold) {  // _DetectionsPlot.draw
      const item = d.images[index];
      const pixels = images[index];
      const size = pixels.width * pixels.height;
      const rgba = new Uint8ClampedArray(pixels.rgba);
      const blend = function (i, color) {  // 0.5 * pixel + 0.5 * colour, rounded as _rgba8
        for (let k = 0; k < 3; k++) rgba[4 * i + k] = Math.floor(Math.fround(0.5 * rgba[4 * i + k] + 0.5 * color[k]) + 0.5);
      };
      const counts = { "true positive": 0, "false positive": 0, ignored: 0, found: 0, missed: 0 };
      const shown = new Set();
      const boxes = [];
      for (const det of item.detections) {  // low scores first: the best drawn last, on top
        if (det.score < threshold) continue;
        const status = { T: "true positive", F: "false positive", I: "ignored" }[det.status[t]];
        counts[status] += 1;
        shown.add(det.position);
        const color = d.status_colors[status];
        if (det.mask && status !== "ignored") {
          const mask = decodeRuns(det.mask, size);
          for (let i = 0; i < size; i++) if (mask[i]) blend(i, color);
        }
        boxes.push({ box: det.box, color: color, dashed: status === "ignored", det: det, status: status });
      }
      for (const obj of item.objects) {
        const outline = decodeRuns(obj.outline, size);
        let color;
        if (obj.crowd) color = d.crowd_color;
        else if (shown.has(obj.matched_by[t])) { color = d.found_color; counts.found += 1; }
        else { color = d.missed_color; counts.missed += 1; }
        for (let i = 0; i < size; i++) if (outline[i]) { rgba[4 * i] = color[0]; rgba[4 * i + 1] = color[1]; rgba[4 * i + 2] = color[2]; }
      }
      const scratch = pixelCanvas(pixels.width, pixels.height);
      putPixels(scratch, rgba);
      canvas.width = pixels.width * scale;
      canvas.height = pixels.height * scale;
      const context = canvas.getContext("2d");
      context.imageSmoothingEnabled = false;
      context.drawImage(scratch, 0, 0, canvas.width, canvas.height);
      context.lineWidth = 1.2;
      for (const b of boxes) {  // boxes are [x1, y1, x2, y2] in pixel edges
        context.setLineDash(b.dashed ? [4, 3] : []);
        context.strokeStyle = rgbCss(b.color);
        context.strokeRect(b.box[0] * scale, b.box[1] * scale, (b.box[2] - b.box[0]) * scale, (b.box[3] - b.box[1]) * scale);
      }
      context.setLineDash([]);
      context.font = "10px sans-serif";
      const labelled = boxes.slice().sort(function (a, b) { return b.det.score - a.det.score; }).slice(0, d.max_labels);
      for (const b of labelled) {
        const text = ((d.category_names[b.det.category] || "") + " " + b.det.score.toFixed(2)).trim();
        const width = context.measureText(text).width + 4;
        context.fillStyle = rgbCss(b.color);
        context.fillRect(b.box[0] * scale, b.box[1] * scale - 12, width, 12);
        context.fillStyle = "white";
        context.fillText(text, b.box[0] * scale + 2, b.box[1] * scale - 2);
      }
      leftTitle.textContent = "image " + item.image_id + " (IoU " + d.iou_thresholds[t].toFixed(2) + ", score ≥ " +
        threshold.toFixed(2) + "): " + counts["true positive"] + " TP, " + counts["false positive"] + " FP, " +
        counts.missed + " missed";
      return counts;
    }

    function drawCurve(t, categoryId, threshold) {  // _PRCurvePlot.draw
      const context = chart.getContext("2d");
      const w = chart.width, h = chart.height, x0 = 44, y0 = h - 34, x1 = w - 10, y1 = 10;
      const X = function (r) { return x0 + (x1 - x0) * r / 1.005; };
      const Y = function (p) { return y0 - (y0 - y1) * p / 1.05; };
      context.clearRect(0, 0, w, h);
      context.strokeStyle = "rgba(0,0,0,0.12)";
      context.fillStyle = "rgb(60,60,60)";
      context.font = "10px sans-serif";
      context.textAlign = "center";
      for (let k = 0; k <= 5; k++) {
        const v = k / 5;
        context.beginPath(); context.moveTo(X(v), y0); context.lineTo(X(v), y1); context.stroke();
        context.beginPath(); context.moveTo(x0, Y(v)); context.lineTo(x1, Y(v)); context.stroke();
        context.fillText(v.toFixed(1), X(v), y0 + 12);
        context.fillText(v.toFixed(1), x0 - 16, Y(v) + 3);
      }
      context.fillText("recall", (x0 + x1) / 2, h - 6);
      context.save(); context.translate(10, (y0 + y1) / 2); context.rotate(-Math.PI / 2);
      context.fillText("precision", 0, 0); context.restore();
      context.strokeStyle = "black";
      context.strokeRect(x0, y1, x1 - x0, y0 - y1);
      const R = d.recall_thresholds;
      const blue = rgbCss(d.curve_color);
      function columns(values) {  // the shaded area: R columns of width 1/R, its area is the mean (AP)
        context.fillStyle = "rgba(" + d.curve_color.join(",") + ",0.18)";
        values.forEach(function (v, i) {
          context.fillRect(X(i / values.length), Y(v), X((i + 1) / values.length) - X(i / values.length), Y(0) - Y(v));
        });
      }
      function steps(xs, ys, color, width) {  // drawstyle steps-pre
        context.strokeStyle = color; context.lineWidth = width; context.beginPath();
        context.moveTo(X(xs[0]), Y(ys[0]));
        for (let i = 1; i < xs.length; i++) { context.lineTo(X(xs[i - 1]), Y(ys[i])); context.lineTo(X(xs[i]), Y(ys[i])); }
        context.stroke(); context.lineWidth = 1;
      }
      function dots(xs, ys) {
        context.fillStyle = blue;
        xs.forEach(function (x, i) { context.fillRect(X(x) - 1, Y(ys[i]) - 1, 2, 2); });
      }
      function marks(points) {
        for (const p of points) {
          context.beginPath(); context.arc(X(p[0]), Y(p[1]), 4, 0, 2 * Math.PI);
          context.fillStyle = "white"; context.fill(); context.strokeStyle = "black"; context.stroke();
        }
      }
      let ap, summary, result;
      const name = categoryId === 0 ? "all categories" : d.category_names[categoryId];
      if (categoryId === 0) {
        const defined = [];
        d.categories.forEach(function (category, k) {
          const one = curve(k, t);
          if (one.num_positives > 0) {
            defined.push(one.interpolated);
            steps(R, one.interpolated, rgbCss(d.category_colors[k]), 0.8);
          }
        });
        const mean = R.map(function (_, i) {
          return defined.length ? defined.reduce(function (a, c) { return a + c[i]; }, 0) / defined.length : 0;
        });
        columns(mean);
        steps(R, mean, blue, 1.8);
        dots(R, mean);
        const points = d.categories.map(function (category, k) { return operatingPoint(curve(k, t), threshold); })
          .filter(function (p) { return p !== null; });
        marks(points);
        ap = defined.length ? mean.reduce(function (a, b) { return a + b; }, 0) / mean.length : -1;
        summary = points.length
          ? "score ≥ " + threshold.toFixed(2) + ": mean precision " +
            (points.reduce(function (a, p) { return a + p[1]; }, 0) / points.length).toFixed(2) + ", mean recall " +
            (points.reduce(function (a, p) { return a + p[0]; }, 0) / points.length).toFixed(2)
          : "score ≥ " + threshold.toFixed(2) + ": no detections";
        result = { ap: ap, operating_points: points };
      } else {
        const one = curve(d.categories.findIndex(function (c) { return c.id === categoryId; }), t);
        ap = one.ap;
        if (one.num_positives === 0) {
          context.textAlign = "center";
          context.fillText("no ground truth of this category: AP undefined", (x0 + x1) / 2, (y0 + y1) / 2);
          summary = "";
          result = { ap: -1, operating_point: null };
        } else {
          context.strokeStyle = "rgb(115,115,115)"; context.lineWidth = 0.8; context.beginPath();
          context.moveTo(X(0), Y(1));
          one.recall.forEach(function (r, i) { context.lineTo(X(r), Y(one.precision[i])); });
          context.stroke(); context.lineWidth = 1;
          columns(one.interpolated);
          const top = one.envelope.length ? one.envelope[0] : 0;
          steps([0].concat(one.recall, [1]), [top].concat(one.envelope, [0]), blue, 1.8);
          dots(R, one.interpolated);
          const point = operatingPoint(one, threshold);
          if (point) marks([point]);
          summary = point
            ? "score ≥ " + threshold.toFixed(2) + ": precision " + point[1].toFixed(2) + ", recall " + point[0].toFixed(2)
            : "score ≥ " + threshold.toFixed(2) + ": no detections";
          result = { ap: ap, operating_point: point };
        }
      }
      rightTitle.textContent = name + " at IoU " + d.iou_thresholds[t].toFixed(2) + ": AP " +
        (ap < 0 ? "n/a" : ap.toFixed(3)) + " — " + summary;
      return result;
    }

    return function draw(v) {
      const t = d.iou_thresholds.indexOf(v.iou_threshold);
      const counts = drawDetections(v.image, t, v.score_threshold);
      const curveResult = drawCurve(t, v.category, v.score_threshold);
      return { result: Object.assign({ counts: counts }, curveResult), text: "" };
    };
  }

  // --------------------------------------------------------------------------------------- start-up

  const KINDS = { "mask-comparison": maskComparison, "model-comparison": modelComparison, "ap-explorer": apExplorer };

  const STYLE = [
    ".sn-widget{font:13px/1.3 sans-serif;margin:0.5em 0 1em;}",
    ".sn-widget .sn-note{display:none;}",
    ".sn-controls .sn-row{display:flex;flex-wrap:wrap;gap:4px 18px;margin:2px 0;}",
    ".sn-control{display:flex;align-items:center;gap:6px;}",
    ".sn-control input[type=range]{width:140px;}",
    ".sn-readout{min-width:2.5em;font-variant-numeric:tabular-nums;}",
    ".sn-option{border:1px solid #999;background:#eee;padding:1px 8px;cursor:pointer;}",
    ".sn-option[aria-pressed=true]{background:#555;color:#fff;}",
    ".sn-picture{display:flex;flex-wrap:wrap;align-items:flex-start;gap:8px;margin-top:6px;}",
    ".sn-panel{margin:0;text-align:center;}",
    ".sn-panel figcaption{font-size:12px;max-width:420px;}",
    ".sn-pixels{image-rendering:pixelated;width:200px;}",
    ".sn-detections .sn-pixels{width:340px;}",
    // four panels in a row of the page's text column; long titles wrap under their panel
    ".sn-widget[data-kind=model-comparison] .sn-panel{width:150px;}",
    ".sn-widget[data-kind=model-comparison] .sn-picture{align-items:flex-end;}",
    ".sn-widget[data-kind=model-comparison] .sn-pixels{width:150px;}",
    ".sn-bars{min-width:260px;align-self:center;}",
    ".sn-bar-row{display:flex;align-items:center;gap:6px;margin:3px 0;}",
    ".sn-bar-label{width:96px;text-align:right;font-size:12px;}",
    ".sn-bar-track{width:120px;height:12px;background:#f2f2f2;display:inline-block;}",
    ".sn-bar{height:12px;display:block;}",
    ".sn-legend{flex-basis:100%;display:flex;flex-wrap:wrap;gap:12px;font-size:12px;}",
    ".sn-swatch{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;border:1px solid #aaa;}",
    ".sn-summary{flex-basis:100%;font-size:12px;}",
    ".sn-chart{max-width:100%;}",
    ".sn-numbers{font-size:12px;color:#444;margin-top:2px;}",
  ].join("\n");

  async function start(root) {
    if (root.dataset.ready) return;
    root.dataset.ready = "starting";
    const state = JSON.parse(root.querySelector("script.sn-state").textContent);
    const make = KINDS[state.kind];
    if (!make) throw new Error("segnotes widget: unknown kind " + state.kind);
    const picture = el("div", "sn-picture");
    const numbers = el("div", "sn-numbers");
    const draw = await make(root, state, picture);
    const controls = buildControls(state.controls, state.rows, redraw);
    function redraw() {
      const out = draw(controls.values);
      numbers.textContent = out.text;
      root.dataset.result = jsonResult(out.result);
      root.dataset.values = JSON.stringify(controls.values);
    }
    root.appendChild(controls.box);
    root.appendChild(picture);
    root.appendChild(numbers);
    redraw();
    root.dataset.ready = "yes";
  }

  function startAll() {
    if (!document.getElementById("sn-widget-style")) {
      const style = el("style");
      style.id = "sn-widget-style";
      style.textContent = STYLE;
      document.head.appendChild(style);
    }
    document.querySelectorAll(".sn-widget").forEach(function (root) {
      start(root).catch(function (error) {
        root.dataset.ready = "failed";
        console.error(error);
      });
    });
  }

  window.segnotesWidgets = { startAll: startAll, perturbMask: perturbMask, binaryScores: binaryScores,
                             prCurve: prCurve };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll);
  else startAll();
})();
