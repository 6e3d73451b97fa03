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
#define KERNELS_ABI 2

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

/* tile_source.finite_valid: out[p] = 1 where every band of the C-contiguous (bands, plane) values is finite. */
HOT void finite_pixels(const float *values, int64_t bands, int64_t plane, uint8_t *out) {
    memset(out, 1, (size_t)plane);
    for (int64_t b = 0; b < bands; b++) {
        const float *line = values + b * plane;
        for (int64_t j = 0; j < plane; j++) out[j] &= (uint8_t)((line[j] - line[j]) == 0);
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
            /* pixels.clear_argmax: the maximum (NaN wins, as np.max), less lead; the last channel at or
             * above that is the class when it is the only one */
            memcpy(top, logits, sizeof(float) * (size_t)n);
            for (int64_t ch = 1; ch < classes; ch++) {
                const float *source = logits + ch * n;
                for (int64_t k = 0; k < n; k++) {
                    const float value = source[k], best = top[k];
                    top[k] = (value > best || value != value) ? value : best;
                }
            }
            for (int64_t k = 0; k < n; k++) {
                top[k] = top[k] - lead;
                count[k] = 0;
                index[k] = 0;
            }
            for (int64_t ch = 0; ch < classes; ch++) {
                const float *source = logits + ch * n;
                for (int64_t k = 0; k < n; k++) {
                    const uint8_t near = source[k] >= top[k];
                    const uint8_t candidate = (uint8_t)(near * ch);
                    count[k] += near;
                    index[k] = index[k] > candidate ? index[k] : candidate;
                }
            }
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

/* An importable (empty) module, so that importlib finds the library where the install put it. */
static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels_c",
    "The runtime's C kernels; called through ctypes by runtime.kernels_c, not from Python.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernels_c(void) { return PyModule_Create(&kernels_module); }
