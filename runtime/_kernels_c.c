/* The runtime's per-pixel kernels in C (issue 21): runtime/kernels_numba.py's kernels, the same float32
 * operations in the same order, so the same bits as the numpy path (tests/test_runtime_kernels.py checks
 * every kernel against it). Built at install (setup.py; optional: without a C compiler the runtime takes its
 * numpy path) and called through ctypes (runtime/kernels_c.py), which releases the GIL: reader threads run
 * them beside the main thread. Unlike numba's they cost nothing to load.
 *
 * Must be compiled with -ffp-contract=off: a fused multiply-add rounds once where numpy rounds twice, and
 * the bits would differ. No -ffast-math either (NaN and infinity checks, operation order). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One machine-code copy per x86-64 level, picked when the library loads (GCC's ifunc): AVX-512 where the CPU
 * has it, AVX2, else SSE2. Wider vectors round each operation the same way, so every copy gives the same
 * bits. Elsewhere (aarch64: NEON is the baseline) one copy. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* Bumped whenever a signature changes: the wrapper refuses a library built from other sources. */
#define KERNELS_ABI 4

int64_t kernels_abi(void) { return KERNELS_ABI; }

/* Whether mask (rows of mask_stride bytes, 0 or 1) holds on every pixel of [y0, y1) x [x0, x1). */
static int mask_holds(const uint8_t *mask, int64_t mask_stride, int64_t y0, int64_t y1, int64_t x0,
                      int64_t x1) {
    for (int64_t i = y0; i < y1; i++) {
        const uint8_t *line = mask + i * mask_stride;
        int missing = 0;
        for (int64_t j = x0; j < x1; j++) missing |= 1 - line[j];
        if (missing) return 0;
    }
    return 1;
}

/* cut_normalised_<type>: engine inputs of the (bands, rows, cols) window at (top, left) of stored values
 * (strides in elements; the last axis contiguous): v = float(stored), v = v * scale + offset where scale is
 * given, then (v - mean) / std into out (C-contiguous). 0 (out partly written) as soon as a pixel is
 * invalid: mask (NULL for none) 0 there, or a band not finite after scaling.
 *
 * window_valid_<type>: whether every pixel of array[:, y0:y1, x0:x1] is valid by that rule. */
#define SOURCE_KERNELS(T, NAME)                                                                          \
    HOT int cut_normalised_##NAME(const T *array, int64_t band_stride, int64_t row_stride,              \
                                  const uint8_t *mask, int64_t mask_stride, const float *scale,         \
                                  const float *offset, int64_t top, int64_t left, const float *mean,    \
                                  const float *std, float *out, int64_t bands, int64_t rows,            \
                                  int64_t cols) {                                                       \
        if (mask && !mask_holds(mask, mask_stride, top, top + rows, left, left + cols)) return 0;       \
        for (int64_t b = 0; b < bands; b++) {                                                           \
            const float m = mean[b], s = std[b];                                                        \
            for (int64_t i = 0; i < rows; i++) {                                                        \
                const T *source = array + b * band_stride + (top + i) * row_stride + left;              \
                float *target = out + (b * rows + i) * cols;                                            \
                int bad = 0;                                                                            \
                if (scale) {                                                                            \
                    const float a = scale[b], c = offset[b];                                            \
                    for (int64_t j = 0; j < cols; j++) {                                                \
                        const float value = (float)source[j] * a + c;                                   \
                        bad |= (value - value) != 0; /* NaN or infinite */                              \
                        target[j] = (value - m) / s;                                                    \
                    }                                                                                   \
                } else {                                                                                \
                    for (int64_t j = 0; j < cols; j++) {                                                \
                        const float value = (float)source[j];                                           \
                        bad |= (value - value) != 0;                                                    \
                        target[j] = (value - m) / s;                                                    \
                    }                                                                                   \
                }                                                                                       \
                if (bad) return 0;                                                                      \
            }                                                                                           \
        }                                                                                               \
        return 1;                                                                                       \
    }                                                                                                   \
                                                                                                        \
    HOT int window_valid_##NAME(const T *array, int64_t band_stride, int64_t row_stride,                \
                                const uint8_t *mask, int64_t mask_stride, const float *scale,           \
                                const float *offset, int64_t bands, int64_t y0, int64_t y1, int64_t x0, \
                                int64_t x1) {                                                           \
        if (mask && !mask_holds(mask, mask_stride, y0, y1, x0, x1)) return 0;                           \
        for (int64_t b = 0; b < bands; b++) {                                                           \
            const float a = scale ? scale[b] : 1.0f, c = scale ? offset[b] : 0.0f;                      \
            for (int64_t i = y0; i < y1; i++) {                                                         \
                const T *source = array + b * band_stride + i * row_stride;                             \
                int bad = 0;                                                                            \
                if (scale) {                                                                            \
                    for (int64_t j = x0; j < x1; j++) {                                                 \
                        const float value = (float)source[j] * a + c;                                   \
                        bad |= (value - value) != 0;                                                    \
                    }                                                                                   \
                } else {                                                                                \
                    for (int64_t j = x0; j < x1; j++) {                                                 \
                        const float value = (float)source[j];                                           \
                        bad |= (value - value) != 0;                                                    \
                    }                                                                                   \
                }                                                                                       \
                if (bad) return 0;                                                                      \
            }                                                                                           \
        }                                                                                               \
        return 1;                                                                                       \
    }

SOURCE_KERNELS(float, float32)
SOURCE_KERNELS(double, float64)
SOURCE_KERNELS(uint8_t, uint8)
SOURCE_KERNELS(int8_t, int8)
SOURCE_KERNELS(uint16_t, uint16)
SOURCE_KERNELS(int16_t, int16)
SOURCE_KERNELS(uint32_t, uint32)
SOURCE_KERNELS(int32_t, int32)

/* validity.normalize_owned: data = (data - mean) / std per band of a C-contiguous (bands, plane) array. */
HOT void normalise_in_place(float *data, int64_t bands, int64_t plane, const float *mean, const float *std) {
    for (int64_t b = 0; b < bands; b++) {
        const float m = mean[b], s = std[b];
        float *line = data + b * plane;
        for (int64_t j = 0; j < plane; j++) line[j] = (line[j] - m) / s;
    }
}

/* validity.prepare_inputs for one modality, in one pass: out = (data - mean) / std per band, then fill where
 * holes[p] and 0 where not inside[p] (both (height, width) bytes; NULL: no holes, all inside). data's bands
 * are band_stride floats apart and its rows row_stride (a crop of a dilated read); out is C-contiguous
 * (bands, height, width) and may be data itself. */
HOT void normalise_filled(const float *data, int64_t bands, int64_t height, int64_t width, int64_t band_stride,
                          int64_t row_stride, const float *mean, const float *std, const uint8_t *holes,
                          const uint8_t *inside, float fill, float *out) {
    for (int64_t b = 0; b < bands; b++) {
        const float m = mean[b], s = std[b];
        for (int64_t i = 0; i < height; i++) {
            const float *source = data + b * band_stride + i * row_stride;
            float *target = out + (b * height + i) * width;
            const uint8_t *hole = holes ? holes + i * width : NULL, *in = inside ? inside + i * width : NULL;
            for (int64_t j = 0; j < width; j++) {
                float value = (source[j] - m) / s;
                if (hole && hole[j]) value = fill;
                if (in && !in[j]) value = 0.0f;
                target[j] = value;
            }
        }
    }
}

/* tile_source.finite_valid: out[p] = 1 where every band of the C-contiguous (bands, plane) values is finite. */
HOT void finite_pixels(const float *values, int64_t bands, int64_t plane, uint8_t *out) {
    memset(out, 1, (size_t)plane);
    for (int64_t b = 0; b < bands; b++) {
        const float *line = values + b * plane;
        for (int64_t j = 0; j < plane; j++) out[j] &= (uint8_t)((line[j] - line[j]) == 0);
    }
}

/* pixels.clear_argmax over n values of each class (class ch at values + ch * n): threshold[k] = the maximum
 * (NaN wins, as np.max) less lead; count[k] = the classes at or above it; index[k] = the last of them (the
 * class where it is the only one). Inlined into each caller's machine-code copy. */
static inline void clear_argmax_planes(const float *values, int64_t classes, int64_t n, float lead,
                                       float *threshold, uint8_t *count, uint8_t *index) {
    memcpy(threshold, values, sizeof(float) * (size_t)n);
    for (int64_t ch = 1; ch < classes; ch++) {
        const float *source = values + ch * n;
        for (int64_t k = 0; k < n; k++) {
            const float value = source[k], best = threshold[k];
            threshold[k] = (value > best || value != value) ? value : best;
        }
    }
    for (int64_t k = 0; k < n; k++) {
        threshold[k] = threshold[k] - lead;
        count[k] = 0;
        index[k] = 0;
    }
    for (int64_t ch = 0; ch < classes; ch++) {
        const float *source = values + ch * n;
        for (int64_t k = 0; k < n; k++) {
            const uint8_t near = source[k] >= threshold[k];
            const uint8_t candidate = (uint8_t)(near * ch);
            count[k] += near;
            index[k] = index[k] > candidate ? index[k] : candidate;
        }
    }
}

/* kernels_numba.quad_pixels, statement by statement (its docstring says what each array holds). cells:
 * (2, 2, channels, n); fine: (classes + 1 + shares, 4, 4, n) or NULL; logits_out: (classes, 4, 4, n) or NULL;
 * class_map / pattern_map: rows of *_stride bytes; neighbour_weight and own_cell: upsampling's quad geometry
 * (4 each). Sets redo[k] for the quads handed back to the numpy path. -1 where memory ran out, else 0. */
HOT int quad_pixels(const float *cells, int64_t channels, int64_t n, int64_t classes, int64_t shares,
                const uint8_t *seen, int64_t seen_count, const float *fine, float lead, uint8_t nodata,
                const int64_t *qy, const int64_t *qx, uint8_t *class_map, int64_t class_stride,
                uint8_t *pattern_map, int64_t pattern_stride, float *logits_out,
                const float *neighbour_weight, const int64_t *own_cell, uint8_t *redo) {
#define CELL(a, b, ch) (cells + (((a) * 2 + (b)) * channels + (ch)) * n)
#define ROW(p, j, ch) (rows + (((p) * 2 + (j)) * channels + (ch)) * n)
#define FINE(ch, p, q) (fine + (((ch) * 4 + (p)) * 4 + (q)) * n)
    const int64_t reach_channel = classes + 1, weight_channel = classes;
    const uint8_t fallback = seen_count > 0 ? seen[0] : 0;
    const int64_t weight_rows = shares > 1 ? shares : 1;
    float *rows = malloc(sizeof(float) * (size_t)(8 * channels * n));
    float *logits = malloc(sizeof(float) * (size_t)((classes + weight_rows + 3) * n));
    uint8_t *flags = malloc((size_t)(3 * n));
    if (!rows || !logits || !flags) {
        free(rows);
        free(logits);
        free(flags);
        return -1;
    }
    float *weights = logits + classes * n, *divisor = weights + weight_rows * n;
    float *weight = divisor + n, *top = weight + n;
    uint8_t *count = flags, *index = flags + n, *covered = flags + 2 * n;
    memset(redo, 0, (size_t)n);
    for (int p = 0; p < 4; p++) {
        const float w = neighbour_weight[p], keep = 1.0f - w;
        const int64_t own = own_cell[p], other = 1 - own_cell[p];
        for (int j = 0; j < 2; j++)
            for (int64_t ch = 0; ch < channels; ch++) {
                const float *first = CELL(own, j, ch), *second = CELL(other, j, ch);
                float *target = ROW(p, j, ch);
                for (int64_t k = 0; k < n; k++) target[k] = first[k] * keep + w * second[k];
            }
    }
    for (int p = 0; p < 4; p++) {
        for (int q = 0; q < 4; q++) {
            const float w = neighbour_weight[q], keep = 1.0f - w;
            const int64_t own = own_cell[q], other = 1 - own_cell[q];
            const float *first = ROW(p, own, reach_channel), *second = ROW(p, other, reach_channel);
            for (int64_t k = 0; k < n; k++) {
                const float reach = first[k] * keep + w * second[k];
                divisor[k] = reach > 0 ? reach : 1.0f;
            }
            first = ROW(p, own, weight_channel);
            second = ROW(p, other, weight_channel);
            for (int64_t k = 0; k < n; k++) weight[k] = (first[k] * keep + w * second[k]) / divisor[k];
            for (int64_t ch = 0; ch < classes; ch++) {
                const float *a = ROW(p, own, ch), *b = ROW(p, other, ch);
                float *target = logits + ch * n;
                for (int64_t k = 0; k < n; k++) target[k] = (a[k] * keep + w * b[k]) / divisor[k];
            }
            for (int64_t s = 0; s < shares; s++) {
                const int64_t channel = classes + 2 + s;
                const float *a = ROW(p, own, channel), *b = ROW(p, other, channel);
                float *target = weights + s * n;
                for (int64_t k = 0; k < n; k++) target[k] = (a[k] * keep + w * b[k]) / divisor[k];
            }
            const float *inside = CELL(own_cell[p], own_cell[q], reach_channel);
            for (int64_t k = 0; k < n; k++) covered[k] = inside[k] > 0;
            if (fine) {
                const float *fine_weight = FINE(classes, p, q);
                for (int64_t k = 0; k < n; k++) {
                    const float total = weight[k] + fine_weight[k];
                    divisor[k] = total > 0 ? total : 1.0f;
                    covered[k] = covered[k] || fine_weight[k] > 0;
                }
                for (int64_t ch = 0; ch < classes; ch++) {
                    float *target = logits + ch * n;
                    const float *extra = FINE(ch, p, q);
                    for (int64_t k = 0; k < n; k++) target[k] = (target[k] * weight[k] + extra[k]) / divisor[k];
                }
                for (int64_t s = 0; s < shares; s++) {
                    float *target = weights + s * n;
                    const float *extra = FINE(classes + 1 + s, p, q);
                    for (int64_t k = 0; k < n; k++) target[k] = target[k] + extra[k];
                }
            }
            if (logits_out)
                for (int64_t ch = 0; ch < classes; ch++)
                    memcpy(logits_out + ((ch * 4 + p) * 4 + q) * n, logits + ch * n, sizeof(float) * (size_t)n);
            clear_argmax_planes(logits, classes, n, lead, top, count, index);
            for (int64_t k = 0; k < n; k++) {
                uint8_t *pixel = class_map + (4 * qy[k] + p) * class_stride + 4 * qx[k] + q;
                if (covered[k]) {
                    *pixel = index[k];
                    if (count[k] != 1 || top[k] == HUGE_VALF) redo[k] = 1;
                } else {
                    *pixel = nodata;
                }
            }
            /* pixels.argmax_channels of the pattern weights: the first maximum, NaN propagating */
            for (int64_t k = 0; k < n; k++) {
                uint8_t *pixel = pattern_map + (4 * qy[k] + p) * pattern_stride + 4 * qx[k] + q;
                if (!covered[k]) {
                    *pixel = 0;
                    continue;
                }
                if (shares == 0) {
                    *pixel = fallback;
                    continue;
                }
                float best = weights[k];
                int64_t chosen = 0;
                for (int64_t s = 1; s < shares; s++) {
                    const float value = weights[s * n + k];
                    if (value > best) chosen = s;
                    if (value != value || best != best)
                        best = NAN;
                    else if (value > best)
                        best = value;
                }
                *pixel = seen[chosen];
            }
        }
    }
    free(rows);
    free(logits);
    free(flags);
    return 0;
#undef CELL
#undef ROW
#undef FINE
}

/* np.maximum / np.minimum of two float32: NaN when either is NaN. */
static inline float nan_max(float a, float b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }
static inline float nan_min(float a, float b) { return (a != a || b != b) ? NAN : (a < b ? a : b); }

/* kernels_numba.quad_decisions, statement by statement (its docstring says what it decides). stacked:
 * C-contiguous (channels, cell_rows, cell_cols); rows / cols: the quads' cell rows and columns (quad_rows + 1,
 * quad_cols + 1); class_map / pattern_map: (4 quad_rows, 4 quad_cols); decided / empty: (quad_rows,
 * quad_cols). -1 where memory ran out, else 0. */
HOT int quad_decisions(const float *stacked, int64_t channels, int64_t cell_rows, int64_t cell_cols,
                       int64_t classes, const int64_t *rows, int64_t quad_rows, const int64_t *cols,
                       int64_t quad_cols, const uint8_t *seen, int64_t seen_count, float lead, float bound,
                       float pattern_lead, uint8_t nodata, uint8_t *class_map, uint8_t *pattern_map,
                       uint8_t *decided, uint8_t *empty) {
    const int64_t plane = cell_rows * cell_cols, shares = channels - classes - 2;
    const uint8_t fallback = seen_count > 0 ? seen[0] : 0;
    uint8_t *flags = malloc((size_t)(5 * plane));
    float *floats = malloc(sizeof(float) * (size_t)(4 * plane));
    if (!flags || !floats) {
        free(flags);
        free(floats);
        return -1;
    }
    uint8_t *index = flags, *sure = flags + plane, *inside = flags + 2 * plane, *pattern = flags + 3 * plane;
    uint8_t *count = flags + 4 * plane;
    float *top = floats, *biggest = floats + plane;
    float *pattern_gap = floats + 2 * plane, *largest = floats + 3 * plane;
    /* per cell, channel by channel over whole planes: pixels.clear_argmax, the logit bound, coverage */
    clear_argmax_planes(stacked, classes, plane, lead, top, count, index);
    for (int64_t p = 0; p < plane; p++) biggest[p] = fabsf(stacked[p]);
    for (int64_t ch = 1; ch < classes; ch++) {
        const float *source = stacked + ch * plane;
        for (int64_t p = 0; p < plane; p++) {
            const float size = fabsf(source[p]);
            biggest[p] = (size > biggest[p] || size != size) ? size : biggest[p];
        }
    }
    const float *reach = stacked + (classes + 1) * plane;
    for (int64_t p = 0; p < plane; p++) {
        inside[p] = reach[p] > 0;
        sure[p] = inside[p] & (count[p] == 1) & (top[p] != HUGE_VALF) & (biggest[p] <= bound);
    }
    /* stride4_quads.pattern_leads: a running largest and runner-up, the first largest channel */
    if (shares > 0) {
        const float *weights = stacked + (classes + 2) * plane;
        float *runner_up = biggest; /* reused */
        memcpy(largest, weights, sizeof(float) * (size_t)plane);
        for (int64_t p = 0; p < plane; p++) {
            runner_up[p] = -HUGE_VALF;
            pattern[p] = 0;
        }
        for (int64_t s = 1; s < shares; s++) {
            const float *source = weights + s * plane;
            for (int64_t p = 0; p < plane; p++) {
                const float value = source[p], best = largest[p];
                runner_up[p] = nan_max(runner_up[p], nan_min(best, value));
                pattern[p] = value > best ? (uint8_t)s : pattern[p];
                largest[p] = nan_max(best, value);
            }
        }
        for (int64_t p = 0; p < plane; p++) pattern_gap[p] = largest[p] - runner_up[p];
    }
    /* per quad: its four cells (top-left a, below b, right c, diagonal d); a row of quads is widened into
     * its first pixel row, then copied to the other three */
    const int64_t width = 4 * quad_cols;
    for (int64_t g = 0; g < quad_rows; g++) {
        uint8_t *class_row = class_map + 4 * g * width, *pattern_row = pattern_map + 4 * g * width;
        for (int64_t f = 0; f < quad_cols; f++) {
            const int64_t a = rows[g] * cell_cols + cols[f], b = rows[g + 1] * cell_cols + cols[f];
            const int64_t c = rows[g] * cell_cols + cols[f + 1], d = rows[g + 1] * cell_cols + cols[f + 1];
            uint8_t sure_all = sure[a] & sure[b] & sure[c] & sure[d];
            sure_all &= index[a] == index[b] && index[a] == index[c] && index[a] == index[d];
            if (shares > 0) {
                const float gap =
                    nan_min(nan_min(pattern_gap[a], pattern_gap[b]), nan_min(pattern_gap[c], pattern_gap[d]));
                const float most = nan_max(nan_max(largest[a], largest[b]), nan_max(largest[c], largest[d]));
                sure_all &= gap >= pattern_lead * most;
                sure_all &= pattern[a] == pattern[b] && pattern[a] == pattern[c] && pattern[a] == pattern[d];
            }
            const uint8_t none = !(inside[a] | inside[b] | inside[c] | inside[d]);
            const uint8_t class_value = none ? nodata : index[a];
            const uint8_t pattern_value = none ? 0 : (shares > 0 ? seen[pattern[a]] : fallback);
            decided[g * quad_cols + f] = sure_all;
            empty[g * quad_cols + f] = none;
            for (int64_t q = 0; q < 4; q++) {
                class_row[4 * f + q] = class_value;
                pattern_row[4 * f + q] = pattern_value;
            }
        }
        for (int64_t i = 1; i < 4; i++) {
            memcpy(class_row + i * width, class_row, (size_t)width);
            memcpy(pattern_row + i * width, pattern_row, (size_t)width);
        }
    }
    free(flags);
    free(floats);
    return 0;
}

/* An importable (empty) module, so that importlib finds the library where the install put it. */
static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels_c",
    "The runtime's C kernels; called through ctypes by runtime.kernels_c, not from Python.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernels_c(void) { return PyModule_Create(&kernels_module); }
