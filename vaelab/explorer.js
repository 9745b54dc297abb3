/* vaelab latent explorer: decodes latent points in the browser with a run's decoder, as the pointer moves.
 *
 * Each fragment written by vaelab/explorer.py holds a JSON blob (class "vx-data") and calls
 * window.vaelabExplorer.mount(itsDiv). The decoder's weights are float16 (base64, little-endian), widened
 * exactly and evaluated in float64: the page agrees with PyTorch's decoder on the same float16-rounded weights
 * to about 1e-6, and with the float32 decoder to well within one grey level. Layer kinds (LAYERS): linear,
 * unflatten, conv2d, conv_transpose2d (output_padding included), residual (x + body(x), a nested layer list) and
 * the activations; a 64x64 RGB conv decoder takes about 15 ms a pointer move (benchmarks/explorer_pointer.py).
 * window.vaelabExplorers[id] exposes each explorer for tests: decode(z), pointToLatent(px, py) and
 * latentToPoint(z) (pixels from the map canvas's top-left as displayed), the current z and decoded values, and
 * the count of updates shown so far.
 * A run with discrete codes (VQ-VAE) has a code grid (data.code_grid) instead of sliders: one number input per
 * position, its codebook, and grids sampled from its code prior that "walk the prior" steps through; every z
 * shown is snapped to the nearest code at each position, as the model quantises.
 */
(function () {
  "use strict";
  if (window.vaelabExplorer) return; // several fragments in one page share the first copy

  var MAP = { left: 56, top: 12, size: 330, bottom: 46, right: 14 }; // plot box inside the map canvas (CSS px)
  var IMAGE_PX = 200; // the decoded image is shown about this wide, upscaled by a whole factor

  function halfToNumber(bits) {
    // IEEE 754 binary16: 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits; exponent 0 is subnormal.
    var sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * Math.pow(2, -24);
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1024 + fraction) * Math.pow(2, exponent - 25);
  }

  function halves(b64) {
    // base64 of little-endian float16 -> Float64Array (exact widening; sums then run in float64).
    var bin = atob(b64), out = new Float64Array(bin.length / 2);
    for (var j = 0; j < out.length; j++) {
      out[j] = halfToNumber(bin.charCodeAt(2 * j) | (bin.charCodeAt(2 * j + 1) << 8));
    }
    return out;
  }

  function linear(layer, x) {
    // y = W x + b with W stored (out, in) row-major, as torch.nn.Linear.
    var n = layer.in, y = new Float64Array(layer.out), w = layer.w, b = layer.b;
    for (var o = 0; o < layer.out; o++) {
      var s = b[o], row = o * n;
      for (var i = 0; i < n; i++) s += w[row + i] * x[i];
      y[o] = s;
    }
    return y;
  }

  function convTranspose2d(layer, x, shape) {
    // torch.nn.ConvTranspose2d, weight (C_in, C_out, kH, kW): every input pixel (iy, ix) adds
    // x[ci, iy, ix] * w[ci, co, ky, kx] to output pixel (co, iy*s - p + ky*d, ix*s - p + kx*d).
    // Per input pixel, its contributions cols[co, ky, kx] = sum_ci x[ci] w[ci, co, ky, kx] run over contiguous
    // weights (a matrix product, skipping the zeros a ReLU leaves), then are added to the output.
    var hIn = shape[1], wIn = shape[2], k = layer.kernel, s = layer.stride, p = layer.padding,
        d = layer.dilation, op = layer.output_padding;
    var hOut = (hIn - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1;
    var wOut = (wIn - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1;
    var cOut = layer.out, plane = hOut * wOut, y = new Float64Array(cOut * plane), w = layer.w;
    var taps = k[0] * k[1], size = cOut * taps, cols = new Float64Array(size), pixels = hIn * wIn;
    for (var co = 0; co < cOut; co++) y.fill(layer.b[co], co * plane, (co + 1) * plane);
    for (var iy = 0; iy < hIn; iy++) {
      for (var ix = 0; ix < wIn; ix++) {
        cols.fill(0);
        for (var ci = 0; ci < layer.in; ci++) {
          var v = x[ci * pixels + iy * wIn + ix], base = ci * size;
          if (v === 0) continue;
          for (var j = 0; j < size; j++) cols[j] += v * w[base + j];
        }
        for (var ky = 0; ky < k[0]; ky++) {
          var oy = iy * s[0] - p[0] + ky * d[0];
          if (oy < 0 || oy >= hOut) continue;
          for (var kx = 0; kx < k[1]; kx++) {
            var ox = ix * s[1] - p[1] + kx * d[1];
            if (ox < 0 || ox >= wOut) continue;
            for (var c = 0, t = ky * k[1] + kx; c < cOut; c++) y[c * plane + oy * wOut + ox] += cols[c * taps + t];
          }
        }
      }
    }
    return { values: y, shape: [cOut, hOut, wOut] };
  }

  function conv2d(layer, x, shape) {
    // torch.nn.Conv2d, weight (C_out, C_in, kH, kW): output pixel (co, oy, ox) is b[co] plus the sum over
    // ci, ky, kx of x[ci, oy*s - p + ky*d, ox*s - p + kx*d] * w[co, ci, ky, kx] (zero outside the input).
    // Per output pixel its input patch is gathered once; each non-zero patch value (a ReLU leaves about half at
    // zero) then adds itself times a contiguous row of the transposed weights wT (C_in*kH*kW, C_out).
    var hIn = shape[1], wIn = shape[2], k = layer.kernel, s = layer.stride, p = layer.padding, d = layer.dilation;
    var hOut = Math.floor((hIn + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0]) + 1;
    var wOut = Math.floor((wIn + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1]) + 1;
    var cOut = layer.out, plane = hOut * wOut, y = new Float64Array(cOut * plane), wT = layer.w;
    var size = layer.in * k[0] * k[1], patch = new Float64Array(size), sums = new Float64Array(cOut);
    var pixels = hIn * wIn;
    for (var oy = 0; oy < hOut; oy++) {
      for (var ox = 0; ox < wOut; ox++) {
        for (var ci = 0, j = 0; ci < layer.in; ci++) {
          for (var ky = 0; ky < k[0]; ky++) {
            var iy = oy * s[0] - p[0] + ky * d[0];
            for (var kx = 0; kx < k[1]; kx++, j++) {
              var ix = ox * s[1] - p[1] + kx * d[1];
              patch[j] = iy < 0 || iy >= hIn || ix < 0 || ix >= wIn ? 0 : x[ci * pixels + iy * wIn + ix];
            }
          }
        }
        sums.set(layer.b);
        for (j = 0; j < size; j++) {
          var v = patch[j], base = j * cOut;
          if (v === 0) continue;
          for (var co = 0; co < cOut; co++) sums[co] += v * wT[base + co];
        }
        for (co = 0; co < cOut; co++) y[co * plane + oy * wOut + ox] = sums[co];
      }
    }
    return { values: y, shape: [cOut, hOut, wOut] };
  }

  function transposed(w, rows, cols) {
    // A rows x cols row-major matrix as cols x rows.
    var t = new Float64Array(w.length);
    for (var r = 0; r < rows; r++) for (var c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
    return t;
  }

  function elementwise(f) {
    return function (layer, x) {
      var y = new Float64Array(x.length);
      for (var i = 0; i < x.length; i++) y[i] = f(x[i], layer);
      return y;
    };
  }

  var ACTIVATIONS = {
    relu: elementwise(function (v) { return v > 0 ? v : 0; }),
    leaky_relu: elementwise(function (v, l) { return v > 0 ? v : l.slope * v; }),
    tanh: elementwise(function (v) { return Math.tanh(v); }),
    elu: elementwise(function (v, l) { return v > 0 ? v : l.alpha * Math.expm1(v); })
  };

  // Each layer kind maps (layer, values, shape) to { values, shape }; values are flat, in (C, H, W) order.
  var LAYERS = {
    linear: function (l, x) { return { values: linear(l, x), shape: [l.out] }; },
    unflatten: function (l, x) { return { values: x, shape: l.shape.slice() }; },
    conv2d: conv2d,
    conv_transpose2d: convTranspose2d,
    residual: function (l, x, shape) {
      // x + body(x): a ResBlock's skip connection
      var r = run(l.layers, x, shape), y = r.values;
      for (var i = 0; i < y.length; i++) y[i] += x[i];
      return r;
    }
  };
  Object.keys(ACTIVATIONS).forEach(function (name) {
    LAYERS[name] = function (l, x, shape) { return { values: ACTIVATIONS[name](l, x), shape: shape }; };
  });

  function run(layers, x, shape) {
    layers.forEach(function (l) { var r = LAYERS[l.type](l, x, shape); x = r.values; shape = r.shape; });
    return { values: x, shape: shape };
  }

  function widen(layers) {
    // Every layer's float16 weights to Float64Array, once; a residual block's body too.
    layers.forEach(function (l) {
      if (l.weight) { l.w = halves(l.weight); l.b = halves(l.bias); }
      // conv2d reads its weights transposed, (C_in*kH*kW, C_out): one contiguous row a patch value
      if (l.type === "conv2d") l.w = transposed(l.w, l.out, l.w.length / l.out);
      if (l.layers) widen(l.layers);
    });
  }

  function makeDecoder(layers, classes) {
    widen(layers);
    // decode_mean: the decoder's logits through a sigmoid, flattened in (C, H, W) order. A conditional decoder
    // takes z followed by the class's one-hot, as the model's decode(z, label) builds it.
    return function decode(z, label) {
      var input = z.slice();
      if (classes) for (var k = 0; k < classes.count; k++) input.push(k === label ? 1 : 0);
      var x = run(layers, Float64Array.from(input), [input.length]).values;
      for (var i = 0; i < x.length; i++) x[i] = 1 / (1 + Math.exp(-x[i]));
      return x;
    };
  }

  function niceTicks(lo, hi, count) {
    // Round-numbered ticks (1, 2 or 5 times a power of ten) covering [lo, hi].
    var raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), step = mag;
    [1, 2, 5, 10].some(function (m) { step = m * mag; return raw <= step; });
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
    return ticks;
  }

  function fmt(v) { return (v < 0 ? "" : " ") + v.toFixed(2); }

  function el(tag, cls, parent, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // ----- geometry: map pixels, plane coordinates (a, b) and latent points z -----

  function mapSize() {
    return { width: MAP.left + MAP.size + MAP.right, height: MAP.top + MAP.size + MAP.bottom };
  }

  function geometry(plane, view) {
    // view = [a_min, a_max, b_min, b_max] of the plot box; b grows upwards as on a plot.
    return {
      planeToPoint: function (a, b) {
        return [MAP.left + (a - view[0]) / (view[1] - view[0]) * MAP.size,
                MAP.top + (view[3] - b) / (view[3] - view[2]) * MAP.size];
      },
      pointToPlane: function (px, py) {
        // Pointer positions outside the plot box are clamped to its edge, so a drag can run past it.
        var u = Math.min(1, Math.max(0, (px - MAP.left) / MAP.size));
        var v = Math.min(1, Math.max(0, (py - MAP.top) / MAP.size));
        return [view[0] + u * (view[1] - view[0]), view[3] - v * (view[3] - view[2])];
      },
      planeToLatent: function (a, b) {
        // z = mean + a * u1 + b * u2
        return plane.mean.map(function (m, i) { return m + a * plane.basis[0][i] + b * plane.basis[1][i]; });
      },
      latentToPlane: function (z) {
        // The orthogonal projection onto the plane: (u1 . (z - mean), u2 . (z - mean)).
        return plane.basis.map(function (u) {
          return u.reduce(function (s, ui, i) { return s + ui * (z[i] - plane.mean[i]); }, 0);
        });
      },
      unit: MAP.size / (view[1] - view[0]) // map pixels per latent unit (equal on both axes)
    };
  }

  function displayed(mapCanvas, geo) {
    // Latent points and CSS pixels from the map canvas's top-left as displayed, which may be shrunk to fit.
    var size = mapSize();
    return {
      toLatent: function (px, py) {
        var r = mapCanvas.getBoundingClientRect();
        var ab = geo.pointToPlane(px * size.width / r.width, py * size.height / r.height);
        return geo.planeToLatent(ab[0], ab[1]);
      },
      fromLatent: function (z) {
        var r = mapCanvas.getBoundingClientRect(), ab = geo.latentToPlane(z), p = geo.planeToPoint(ab[0], ab[1]);
        return [p[0] * r.width / size.width, p[1] * r.height / size.height];
      }
    };
  }

  // ----- layout -----

  function buildLayout(root, data) {
    // Title, one line of instructions, map | (image, z, sliders), legend.
    el("div", "vx-title", root, data.title);
    el("div", "vx-help", root, "Move the pointer over the map (or drag on it) to decode that latent point; " +
      (data.plane.is_latent ? "" : "the map is a 2-D plane of the " + data.z_dim + "-D latent, " +
        (data.code_grid ? "each point snapped to the nearest code at every position, the code boxes set each " +
          "position; " : "the sliders set every coordinate; ")) +
      "dots are test images' " + data.codes_name + ".");
    var body = el("div", "vx-body", root);
    var mapCanvas = el("canvas", "vx-map", body);
    var side = el("div", "vx-side", body);
    el("div", "vx-caption", side, "decoded image (sigmoid of the decoder's logits)");
    var image = el("canvas", "vx-image", side);
    el("div", "vx-caption", side, "latent point z");
    var zText = el("div", "vx-z", side);
    return { mapCanvas: mapCanvas, side: side, image: image, zText: zText, legend: el("div", "vx-legend", root) };
  }

  function buildClassSelect(side, classes, start, onPick) {
    // A conditional model decodes z as the chosen class: one option per class, named as the data names them.
    var label = el("label", "vx-caption", side, "decode as class ");
    var select = el("select", "vx-class", label);
    classes.names.forEach(function (name, k) {
      var option = el("option", "", select, name);
      option.value = String(k);
    });
    select.value = String(start);
    select.addEventListener("change", function () { onPick(parseInt(select.value, 10)); });
    return select;
  }

  function sizeCanvases(dom, imageShape, scale, dpr) {
    var size = mapSize();
    dom.mapCanvas.width = Math.round(size.width * dpr); dom.mapCanvas.height = Math.round(size.height * dpr);
    // On a narrow screen the map shrinks with the page (max-width 100%); pointer positions are rescaled.
    dom.mapCanvas.style.width = size.width + "px"; dom.mapCanvas.style.maxWidth = "100%";
    dom.mapCanvas.style.height = "auto";
    dom.image.width = imageShape[2] * scale; dom.image.height = imageShape[1] * scale;
  }

  function buildLegend(legend, data) {
    el("div", "", legend, "\u2295 current z" + (data.plane.is_latent ? "" : " (projected onto the plane)") +
      (data.prior_centre ? "   \u2022   dashed circles: the prior N(0, I) at 1\u03c3 and 2\u03c3" : ""));
    if (!data.points.label) return;
    var seen = {};
    data.points.label.forEach(function (l) { seen[l] = true; });
    el("span", "", legend, "dot colour = test label: ");
    Object.keys(seen).map(Number).sort(function (a, b) { return a - b; }).forEach(function (l) {
      var item = el("span", "", legend);
      el("i", "", item).style.background = colour(data.palette, l);
      item.appendChild(document.createTextNode(String(l)));
    });
  }

  function buildSliders(side, ranges, onSlide) {
    // One range input per latent dimension; onSlide(d, value) when the user moves slider d.
    el("div", "vx-caption", side, "one slider per latent dimension");
    var box = el("div", "vx-sliders", side);
    return ranges.map(function (range, d) {
      el("label", "", box, "z" + (d + 1));
      var input = el("input", "", box);
      input.type = "range"; input.min = range[0]; input.max = range[1];
      input.step = (range[1] - range[0]) / 500;
      input.setAttribute("aria-label", "latent dimension " + (d + 1));
      var value = el("span", "", box);
      input.addEventListener("input", function () { onSlide(d, parseFloat(input.value)); });
      return { input: input, value: value };
    });
  }

  function makeCodeGrid(grid) {
    // lookup(codes) -> z, the codes' vectors end to end; nearest(z) -> the nearest code at each position.
    var vectors = halves(grid.vectors), dim = grid.dim;
    function lookup(codes) {
      var z = [];
      codes.forEach(function (k) { for (var i = 0; i < dim; i++) z.push(vectors[k * dim + i]); });
      return z;
    }
    function nearest(z) {
      var codes = [];
      for (var p = 0; p < grid.positions; p++) {
        var best = 0, bestDistance = Infinity;
        for (var k = 0; k < grid.size; k++) {
          var d = 0;
          for (var i = 0; i < dim; i++) { var t = z[p * dim + i] - vectors[k * dim + i]; d += t * t; }
          if (d < bestDistance) { bestDistance = d; best = k; }
        }
        codes.push(best);
      }
      return codes;
    }
    return { lookup: lookup, nearest: nearest };
  }

  function buildCodeInputs(side, grid, onCodes, onWalk) {
    // One number input per grid position (0..K-1); onCodes(codes) on an edit, onWalk() on the button.
    el("div", "vx-caption", side, "code at each of the " + grid.positions + " positions (0–" +
      (grid.size - 1) + "); z is their codebook vectors");
    var box = el("div", "vx-codes", side), inputs = [];
    for (var p = 0; p < grid.positions; p++) {
      var input = el("input", "", box);
      input.type = "number"; input.min = 0; input.max = grid.size - 1; input.step = 1;
      input.setAttribute("aria-label", "code at position " + (p + 1));
      input.addEventListener("change", function () {
        onCodes(inputs.map(function (x) {
          return Math.min(grid.size - 1, Math.max(0, Math.round(Number(x.value) || 0)));
        }));
      });
      inputs.push(input);
    }
    var button = el("button", "vx-walk", side, "walk the prior");
    button.type = "button";
    button.addEventListener("click", onWalk);
    var walkText = el("div", "vx-caption", side, "");
    return { inputs: inputs, walkText: walkText };
  }

  // ----- drawing -----

  var FONT = "system-ui, 'DejaVu Sans', sans-serif";

  function colour(palette, label) { return palette[((label % 10) + 10) % 10]; }

  function drawPoints(g, data, geo) {
    var pts = data.points, labels = pts.label;
    g.fillStyle = "#fafafa"; g.fillRect(MAP.left, MAP.top, MAP.size, MAP.size);
    g.globalAlpha = 0.7;
    for (var i = 0; i < pts.a.length; i++) {
      var p = geo.planeToPoint(pts.a[i], pts.b[i]);
      g.fillStyle = labels ? colour(data.palette, labels[i]) : data.palette[0];
      g.beginPath(); g.arc(p[0], p[1], 2.2, 0, 2 * Math.PI); g.fill();
    }
    g.globalAlpha = 1;
  }

  function drawPrior(g, data, geo) {
    // Dashed circles of the prior N(0, I) at data.prior_radii standard deviations, labelled near the outer one.
    var centre = geo.planeToPoint(data.prior_centre[0], data.prior_centre[1]), outer = data.prior_radii[1] * geo.unit;
    g.strokeStyle = "#444"; g.lineWidth = 1.2; g.setLineDash([5, 4]);
    data.prior_radii.forEach(function (r) {
      g.beginPath(); g.arc(centre[0], centre[1], r * geo.unit, 0, 2 * Math.PI); g.stroke();
    });
    g.setLineDash([]);
    g.fillStyle = "#444"; g.font = "11px " + FONT; g.textAlign = "left";
    g.fillText("prior N(0, I): 1σ, 2σ", Math.min(centre[0] + 2 + outer * 0.71, MAP.left + MAP.size - 110),
               Math.max(centre[1] - outer * 0.71 - 4, MAP.top + 12));
  }

  function drawAxes(g, plane, view, geo) {
    // Box, ticks with plane coordinates, and the axes' names.
    var bottom = MAP.top + MAP.size;
    g.strokeStyle = "#333"; g.lineWidth = 1; g.strokeRect(MAP.left, MAP.top, MAP.size, MAP.size);
    g.fillStyle = "#333"; g.font = "11px " + FONT;
    g.textAlign = "center"; g.textBaseline = "top";
    niceTicks(view[0], view[1], 6).forEach(function (t) {
      var x = geo.planeToPoint(t, 0)[0];
      g.beginPath(); g.moveTo(x, bottom); g.lineTo(x, bottom + 4); g.stroke();
      g.fillText(String(+t.toPrecision(6)), x, bottom + 6);
    });
    g.textAlign = "right"; g.textBaseline = "middle";
    niceTicks(view[2], view[3], 6).forEach(function (t) {
      var y = geo.planeToPoint(0, t)[1];
      g.beginPath(); g.moveTo(MAP.left - 4, y); g.lineTo(MAP.left, y); g.stroke();
      g.fillText(String(+t.toPrecision(6)), MAP.left - 6, y);
    });
    g.font = "12px " + FONT; g.textAlign = "center"; g.textBaseline = "alphabetic";
    g.fillText(plane.axes[0], MAP.left + MAP.size / 2, bottom + 36);
    g.save(); g.translate(16, MAP.top + MAP.size / 2); g.rotate(-Math.PI / 2);
    g.fillText(plane.axes[1], 0, 0); g.restore();
  }

  function drawBackground(data, geo, width, height, dpr) {
    // The map without the marker, drawn once into an off-screen canvas of the map canvas's size.
    var bg = document.createElement("canvas"), size = mapSize();
    bg.width = width; bg.height = height;
    var g = bg.getContext("2d");
    g.scale(dpr, dpr);
    g.fillStyle = "#fff"; g.fillRect(0, 0, size.width, size.height);
    g.save();
    g.beginPath(); g.rect(MAP.left, MAP.top, MAP.size, MAP.size); g.clip();
    drawPoints(g, data, geo);
    if (data.prior_centre) drawPrior(g, data, geo);
    g.restore();
    drawAxes(g, data.plane, data.view, geo);
    return bg;
  }

  function drawMarker(ctx, background, p, dpr) {
    // The background, then a circled cross at map point p.
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(background, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(p[0], p[1], 6, 0, 2 * Math.PI); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(p[0] - 10, p[1]); ctx.lineTo(p[0] + 10, p[1]);
    ctx.moveTo(p[0], p[1] - 10); ctx.lineTo(p[0], p[1] + 10); ctx.stroke();
  }

  function drawImage(ctx, values, imageShape, scale) {
    // Nearest-neighbour upscaling written pixel by pixel, so every canvas pixel is exactly round(255 * p).
    var C = imageShape[0], H = imageShape[1], W = imageShape[2], pixels = H * W;
    var out = ctx.createImageData(W * scale, H * scale), px = out.data;
    for (var y = 0; y < H * scale; y++) {
      for (var x = 0; x < W * scale; x++) {
        var src = Math.floor(y / scale) * W + Math.floor(x / scale), o = 4 * (y * W * scale + x);
        for (var c = 0; c < 3; c++) px[o + c] = Math.round(255 * values[(C === 3 ? c * pixels : 0) + src]);
        px[o + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  function latentText(z, ab, isLatent) {
    // Four coordinates a line, so a long z stays as narrow as a phone.
    var lines = [];
    for (var i = 0; i < z.length; i += 4) lines.push(z.slice(i, i + 4).map(fmt).join(","));
    var text = "z = (" + lines.join(",\n     ") + " )";
    if (!isLatent) text += "\nplane point (" + fmt(ab[0]) + "," + fmt(ab[1]) + " )";
    return text;
  }

  // ----- wiring -----

  function wirePointer(mapCanvas, onPoint) {
    // onPoint(px, py) in CSS pixels from the map's top-left as displayed: on mouse moves, and on touch or pen
    // drags; a drag that leaves the map keeps decoding (pointer capture).
    function onPointer(event) {
      if (event.type === "pointermove" && event.pointerType !== "mouse" && !event.buttons) return;
      var r = mapCanvas.getBoundingClientRect();
      onPoint(event.clientX - r.left, event.clientY - r.top);
    }
    mapCanvas.addEventListener("pointermove", onPointer);
    mapCanvas.addEventListener("pointerdown", function (event) {
      mapCanvas.setPointerCapture(event.pointerId);
      onPointer(event);
    });
  }

  function register(root, api) {
    // window.vaelabExplorers[id] = api, under a fresh id when the same fragment was pasted twice.
    var registry = window.vaelabExplorers = window.vaelabExplorers || {};
    var id = root.id;
    for (var n = 2; registry[id]; n++) id = root.id + "-" + n;
    root.dataset.explorerId = id;
    registry[id] = api;
  }

  function mount(root) {
    var data = JSON.parse(root.querySelector("script.vx-data").textContent);
    var decode = makeDecoder(data.decoder, data.classes), geo = geometry(data.plane, data.view);
    var scale = Math.max(1, Math.floor(IMAGE_PX / Math.max(data.image_shape[1], data.image_shape[2])));
    var dpr = window.devicePixelRatio || 1;
    var dom = buildLayout(root, data);
    sizeCanvases(dom, data.image_shape, scale, dpr);
    var mapCtx = dom.mapCanvas.getContext("2d"), imageCtx = dom.image.getContext("2d");
    var background = drawBackground(data, geo, dom.mapCanvas.width, dom.mapCanvas.height, dpr);
    var state = { z: null, label: data.start_class, values: null, updates: 0 };
    var classSelect = data.classes && buildClassSelect(dom.side, data.classes, data.start_class, function (k) {
      state.label = k;
      show(state.z);
    });
    var sliders = data.sliders && buildSliders(dom.side, data.sliders, function (d, value) {
      var z = state.z.slice();
      z[d] = value;
      show(z);
    });

    var grid = data.code_grid && makeCodeGrid(data.code_grid);
    var codeInputs = grid && buildCodeInputs(dom.side, data.code_grid, function (codes) {
      show(grid.lookup(codes));
    }, walkPrior);
    state.walk = 0;

    function walkPrior() {
      // The next of the grids drawn in Python from the code prior (uniform codes while it is untrained).
      var walk = data.code_grid.prior_walk, i = state.walk % walk.length;
      state.walk += 1;
      show(grid.lookup(walk[i]));
      codeInputs.walkText.textContent = "grid " + (i + 1) + " of " + walk.length + " drawn from " +
        (data.code_grid.prior_learned ? "the trained code prior" : "uniform codes (no trained code prior)");
    }

    function show(z) {
      if (grid) {
        state.codes = grid.nearest(z);
        z = grid.lookup(state.codes);
        codeInputs.inputs.forEach(function (input, p) { input.value = state.codes[p]; });
      }
      state.z = z;
      state.values = decode(z, state.label);
      state.updates += 1;
      drawImage(imageCtx, state.values, data.image_shape, scale);
      var ab = geo.latentToPlane(z);
      drawMarker(mapCtx, background, geo.planeToPoint(ab[0], ab[1]), dpr);
      dom.zText.textContent = latentText(z, ab, data.plane.is_latent);
      if (sliders) sliders.forEach(function (s, d) { s.input.value = z[d]; s.value.textContent = fmt(z[d]); });
    }

    var shown = displayed(dom.mapCanvas, geo);
    wirePointer(dom.mapCanvas, function (px, py) { show(shown.toLatent(px, py)); });
    buildLegend(dom.legend, data);
    show(data.start.slice());
    register(root, {
      decode: decode,
      pointToLatent: shown.toLatent,
      latentToPoint: shown.fromLatent,
      setZ: show,
      setClass: function (k) { classSelect.value = String(k); classSelect.dispatchEvent(new Event("change")); },
      get label() { return state.label; },
      walkPrior: grid ? walkPrior : null,
      get codes() { return state.codes ? state.codes.slice() : null; },
      get z() { return state.z.slice(); },
      get values() { return Array.from(state.values); },
      get updates() { return state.updates; }, // images shown so far: tests wait for it to grow after an input
      scale: scale,
      mapCanvas: dom.mapCanvas,
      imageCanvas: dom.image
    });
  }

  window.vaelabExplorer = { mount: mount };
})();
