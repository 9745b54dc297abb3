/* vaelab latent explorer: decodes latent points in the browser with a run's decoder, as the pointer moves.
 *
 * Each fragment written by vaelab/explorer.py holds a JSON blob (class "vx-data") and calls
 * window.vaelabExplorer.mount(itsDiv). The decoder's weights are float32 (base64, little-endian) and are
 * evaluated in float64, so the page agrees with PyTorch's float32 decoder to about 1e-6.
 * window.vaelabExplorers[id] exposes each explorer for tests: decode(z), pointToLatent(px, py) and
 * latentToPoint(z) (pixels from the map canvas's top-left as displayed), the current z and decoded values.
 */
(function () {
  "use strict";
  if (window.vaelabExplorer) return; // several fragments in one page share the first copy

  var MAP = { left: 56, top: 12, size: 330, bottom: 46, right: 14 }; // plot box inside the map canvas (CSS px)
  var IMAGE_PX = 200; // the decoded image is shown about this wide, upscaled by a whole factor

  function floats(b64) {
    // base64 of little-endian float32 -> Float64Array (exact widening; sums then run in float64).
    var bin = atob(b64), view = new DataView(new ArrayBuffer(bin.length));
    for (var i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
    var out = new Float64Array(bin.length / 4);
    for (var j = 0; j < out.length; j++) out[j] = view.getFloat32(4 * j, true);
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
    // x * w[ci, co, ky, kx] to output pixel (iy*s - p + ky*d, ix*s - p + kx*d).
    var hIn = shape[1], wIn = shape[2], k = layer.kernel, s = layer.stride, p = layer.padding,
        d = layer.dilation, op = layer.output_padding;
    var hOut = (hIn - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1;
    var wOut = (wIn - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1;
    var cOut = layer.out, plane = hOut * wOut, y = new Float64Array(cOut * plane), w = layer.w;
    for (var co = 0; co < cOut; co++) y.fill(layer.b[co], co * plane, (co + 1) * plane);
    for (var ci = 0; ci < layer.in; ci++) {
      for (var iy = 0; iy < hIn; iy++) {
        for (var ix = 0; ix < wIn; ix++) {
          var v = x[(ci * hIn + iy) * wIn + ix];
          if (v === 0) continue; // after a ReLU most inputs are zero
          for (var c = 0; c < cOut; c++) {
            var wBase = (ci * cOut + c) * k[0] * k[1], yBase = c * plane;
            for (var ky = 0; ky < k[0]; ky++) {
              var oy = iy * s[0] - p[0] + ky * d[0];
              if (oy < 0 || oy >= hOut) continue;
              for (var kx = 0; kx < k[1]; kx++) {
                var ox = ix * s[1] - p[1] + kx * d[1];
                if (ox < 0 || ox >= wOut) continue;
                y[yBase + oy * wOut + ox] += v * w[wBase + ky * k[1] + kx];
              }
            }
          }
        }
      }
    }
    return { values: y, shape: [cOut, hOut, wOut] };
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

  function makeDecoder(layers) {
    layers.forEach(function (l) { if (l.weight) { l.w = floats(l.weight); l.b = floats(l.bias); } });
    // decode_mean: the decoder's logits through a sigmoid, flattened in (C, H, W) order.
    return function decode(z) {
      var x = Float64Array.from(z), shape = [x.length];
      layers.forEach(function (l) {
        if (l.type === "linear") { x = linear(l, x); shape = [x.length]; }
        else if (l.type === "unflatten") { shape = l.shape.slice(); }
        else if (l.type === "conv_transpose2d") { var r = convTranspose2d(l, x, shape); x = r.values; shape = r.shape; }
        else { x = ACTIVATIONS[l.type](l, x); }
      });
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

  function mount(root) {
    var data = JSON.parse(root.querySelector("script.vx-data").textContent);
    var decode = makeDecoder(data.decoder);
    var plane = data.plane, zDim = data.z_dim, view = data.view;
    var C = data.image_shape[0], H = data.image_shape[1], W = data.image_shape[2];
    var scale = Math.max(1, Math.floor(IMAGE_PX / Math.max(H, W)));

    // Layout: title, one line of instructions, map | (image, z, sliders), legend.
    el("div", "vx-title", root, data.title);
    el("div", "vx-help", root, "Move the pointer over the map (or drag on it) to decode that latent point; " +
      (plane.is_latent ? "" : "the map is a 2-D plane of the " + zDim + "-D latent, the sliders set every coordinate; ") +
      "dots are test images' " + data.codes_name + ".");
    var body = el("div", "vx-body", root);
    var mapCanvas = el("canvas", "vx-map", body);
    var side = el("div", "vx-side", body);
    el("div", "vx-caption", side, "decoded image (sigmoid of the decoder's logits)");
    var image = el("canvas", "vx-image", side);
    el("div", "vx-caption", side, "latent point z");
    var zText = el("div", "vx-z", side);
    var legend = el("div", "vx-legend", root);

    var mapW = MAP.left + MAP.size + MAP.right, mapH = MAP.top + MAP.size + MAP.bottom;
    var dpr = window.devicePixelRatio || 1;
    mapCanvas.width = Math.round(mapW * dpr); mapCanvas.height = Math.round(mapH * dpr);
    // On a narrow screen the map shrinks with the page (max-width 100%); pointer positions are rescaled.
    mapCanvas.style.width = mapW + "px"; mapCanvas.style.maxWidth = "100%"; mapCanvas.style.height = "auto";
    image.width = W * scale; image.height = H * scale;
    var ctx = mapCanvas.getContext("2d"), imageCtx = image.getContext("2d");

    function planeToPoint(a, b) {
      return [MAP.left + (a - view[0]) / (view[1] - view[0]) * MAP.size,
              MAP.top + (view[3] - b) / (view[3] - view[2]) * MAP.size];
    }
    function pointToPlane(px, py) {
      // Pointer positions outside the plot box are clamped to its edge, so a drag can run past it.
      var u = Math.min(1, Math.max(0, (px - MAP.left) / MAP.size));
      var v = Math.min(1, Math.max(0, (py - MAP.top) / MAP.size));
      return [view[0] + u * (view[1] - view[0]), view[3] - v * (view[3] - view[2])];
    }
    function planeToLatent(a, b) {
      // z = mean + a * u1 + b * u2
      return plane.mean.map(function (m, i) { return m + a * plane.basis[0][i] + b * plane.basis[1][i]; });
    }
    function latentToPlane(z) {
      // The orthogonal projection onto the plane: (u1 . (z - mean), u2 . (z - mean)).
      return plane.basis.map(function (u) {
        return u.reduce(function (s, ui, i) { return s + ui * (z[i] - plane.mean[i]); }, 0);
      });
    }

    var background = drawBackground();
    var state = { z: null, values: null };
    var sliders = data.sliders ? buildSliders() : null;

    function drawBackground() {
      var bg = document.createElement("canvas");
      bg.width = mapCanvas.width; bg.height = mapCanvas.height;
      var g = bg.getContext("2d");
      g.scale(dpr, dpr);
      g.fillStyle = "#fff"; g.fillRect(0, 0, mapW, mapH);
      g.save();
      g.beginPath(); g.rect(MAP.left, MAP.top, MAP.size, MAP.size); g.clip();
      g.fillStyle = "#fafafa"; g.fillRect(MAP.left, MAP.top, MAP.size, MAP.size);
      var pts = data.points, labels = pts.label;
      g.globalAlpha = 0.7;
      for (var i = 0; i < pts.a.length; i++) {
        var p = planeToPoint(pts.a[i], pts.b[i]);
        g.fillStyle = labels ? data.palette[((labels[i] % 10) + 10) % 10] : data.palette[0];
        g.beginPath(); g.arc(p[0], p[1], 2.2, 0, 2 * Math.PI); g.fill();
      }
      g.globalAlpha = 1;
      if (data.prior_centre) {
        var centre = planeToPoint(data.prior_centre[0], data.prior_centre[1]), unit = MAP.size / (view[1] - view[0]);
        g.strokeStyle = "#444"; g.lineWidth = 1.2; g.setLineDash([5, 4]);
        data.prior_radii.forEach(function (r) { g.beginPath(); g.arc(centre[0], centre[1], r * unit, 0, 2 * Math.PI); g.stroke(); });
        g.setLineDash([]);
        g.fillStyle = "#444"; g.font = "11px system-ui, 'DejaVu Sans', sans-serif"; g.textAlign = "left";
        g.fillText("prior N(0, I): 1σ, 2σ", Math.min(centre[0] + 2 + data.prior_radii[1] * unit * 0.71, MAP.left + MAP.size - 110),
                   Math.max(centre[1] - data.prior_radii[1] * unit * 0.71 - 4, MAP.top + 12));
      }
      g.restore();
      // Axes: box, ticks with latent coordinates, names.
      g.strokeStyle = "#333"; g.lineWidth = 1; g.strokeRect(MAP.left, MAP.top, MAP.size, MAP.size);
      g.fillStyle = "#333"; g.font = "11px system-ui, 'DejaVu Sans', sans-serif";
      g.textAlign = "center"; g.textBaseline = "top";
      niceTicks(view[0], view[1], 6).forEach(function (t) {
        var x = planeToPoint(t, 0)[0];
        g.beginPath(); g.moveTo(x, MAP.top + MAP.size); g.lineTo(x, MAP.top + MAP.size + 4); g.stroke();
        g.fillText(String(+t.toPrecision(6)), x, MAP.top + MAP.size + 6);
      });
      g.textAlign = "right"; g.textBaseline = "middle";
      niceTicks(view[2], view[3], 6).forEach(function (t) {
        var y = planeToPoint(0, t)[1];
        g.beginPath(); g.moveTo(MAP.left - 4, y); g.lineTo(MAP.left, y); g.stroke();
        g.fillText(String(+t.toPrecision(6)), MAP.left - 6, y);
      });
      g.font = "12px system-ui, 'DejaVu Sans', sans-serif"; g.textAlign = "center"; g.textBaseline = "alphabetic";
      g.fillText(plane.axes[0], MAP.left + MAP.size / 2, MAP.top + MAP.size + 36);
      g.save(); g.translate(16, MAP.top + MAP.size / 2); g.rotate(-Math.PI / 2);
      g.fillText(plane.axes[1], 0, 0); g.restore();
      return bg;
    }

    function buildSliders() {
      el("div", "vx-caption", side, "one slider per latent dimension");
      var box = el("div", "vx-sliders", side);
      return data.sliders.map(function (range, d) {
        el("label", "", box, "z" + (d + 1));
        var input = el("input", "", box);
        input.type = "range"; input.min = range[0]; input.max = range[1];
        input.step = (range[1] - range[0]) / 500;
        input.setAttribute("aria-label", "latent dimension " + (d + 1));
        var value = el("span", "", box);
        input.addEventListener("input", function () {
          var z = state.z.slice();
          z[d] = parseFloat(input.value);
          show(z);
        });
        return { input: input, value: value };
      });
    }

    function drawImage(values) {
      // Nearest-neighbour upscaling written pixel by pixel, so every canvas pixel is exactly round(255 * p).
      var out = imageCtx.createImageData(W * scale, H * scale), px = out.data, pixels = H * W;
      for (var y = 0; y < H * scale; y++) {
        for (var x = 0; x < W * scale; x++) {
          var src = Math.floor(y / scale) * W + Math.floor(x / scale), o = 4 * (y * W * scale + x);
          for (var c = 0; c < 3; c++) px[o + c] = Math.round(255 * values[(C === 3 ? c * pixels : 0) + src]);
          px[o + 3] = 255;
        }
      }
      imageCtx.putImageData(out, 0, 0);
    }

    function show(z) {
      state.z = z;
      state.values = decode(z);
      drawImage(state.values);
      var ab = latentToPlane(z), p = planeToPoint(ab[0], ab[1]);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(background, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(p[0], p[1], 6, 0, 2 * Math.PI); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(p[0] - 10, p[1]); ctx.lineTo(p[0] + 10, p[1]);
      ctx.moveTo(p[0], p[1] - 10); ctx.lineTo(p[0], p[1] + 10); ctx.stroke();
      var text = "z = (" + z.map(fmt).join(",") + " )";
      if (zDim > 4) text = "z = (" + z.slice(0, 4).map(fmt).join(",") + ",\n     " + z.slice(4).map(fmt).join(",") + " )";
      if (!plane.is_latent) text += "\nplane point (" + fmt(ab[0]) + "," + fmt(ab[1]) + " )";
      zText.textContent = text;
      if (sliders) sliders.forEach(function (s, d) { s.input.value = z[d]; s.value.textContent = fmt(z[d]); });
    }

    function displayedToLatent(px, py) {
      // (px, py): CSS pixels from the map's top-left corner as displayed, which may be shrunk to fit.
      var r = mapCanvas.getBoundingClientRect(), ab = pointToPlane(px * mapW / r.width, py * mapH / r.height);
      return planeToLatent(ab[0], ab[1]);
    }
    function latentToDisplayed(z) {
      var r = mapCanvas.getBoundingClientRect(), ab = latentToPlane(z), p = planeToPoint(ab[0], ab[1]);
      return [p[0] * r.width / mapW, p[1] * r.height / mapH];
    }

    function onPointer(event) {
      if (event.type === "pointermove" && event.pointerType !== "mouse" && !event.buttons) return;
      var r = mapCanvas.getBoundingClientRect();
      show(displayedToLatent(event.clientX - r.left, event.clientY - r.top));
    }
    mapCanvas.addEventListener("pointermove", onPointer);
    mapCanvas.addEventListener("pointerdown", function (event) {
      mapCanvas.setPointerCapture(event.pointerId); // keep decoding while a drag leaves the map
      onPointer(event);
    });

    el("div", "", legend, "\u2295 current z" + (plane.is_latent ? "" : " (projected onto the plane)") +
      (data.prior_centre ? "   \u2022   dashed circles: the prior N(0, I) at 1\u03c3 and 2\u03c3" : ""));
    if (data.points.label) {
      var seen = {};
      data.points.label.forEach(function (l) { seen[l] = true; });
      el("span", "", legend, "dot colour = test label: ");
      Object.keys(seen).map(Number).sort(function (a, b) { return a - b; }).forEach(function (l) {
        var item = el("span", "", legend);
        el("i", "", item).style.background = data.palette[((l % 10) + 10) % 10];
        item.appendChild(document.createTextNode(String(l)));
      });
    }
    show(data.start.slice());

    var registry = window.vaelabExplorers = window.vaelabExplorers || {};
    var id = root.id;
    for (var n = 2; registry[id]; n++) id = root.id + "-" + n; // the same fragment pasted twice
    root.dataset.explorerId = id;
    registry[id] = {
      decode: decode,
      pointToLatent: displayedToLatent,
      latentToPoint: latentToDisplayed,
      setZ: show,
      get z() { return state.z.slice(); },
      get values() { return Array.from(state.values); },
      scale: scale,
      mapCanvas: mapCanvas,
      imageCanvas: image
    };
  }

  window.vaelabExplorer = { mount: mount };
})();
