/* Undo PNG's row filters in place: the optional compiled accelerator for 8-bit RGB and
 * RGBA PNGs (imgcompress_core._fast, docs/compression.md).
 *
 * A PNG's pixels are a zlib stream of rows, each a filter-type byte and the row's bytes
 * filtered by that type (None, Sub, Up, Average, Paeth: PNG specification, section 9).
 * The service inflates the stream with libdeflate (imagecodecs), two to three times
 * faster than the zlib that libspng and Pillow use, and this module reverses the filters.
 *
 * unfilter(rows, width, height, bpp) takes the inflated stream (height rows of
 * 1 + width * bpp bytes, bpp 3 or 4) in a writable buffer and leaves the pixels, packed,
 * in its first height * width * bpp bytes: each row is written before the one that
 * follows, at a lower address than its own filtered bytes, so no second buffer is needed.
 * It returns False, leaving the buffer undefined, when a row has an unknown filter type.
 * The GIL is released while it works. Built when a C compiler is there at install time
 * (pyproject.toml); without it libspng or Pillow decodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) && !defined(UNFILTER_BYTEWISE) /* the tests build the other too */
#include <emmintrin.h>
#define INLINE static inline __attribute__((always_inline))

/* A pixel of `bpp` bytes widened to 16-bit lanes. */
INLINE __m128i load_pixel(const uint8_t *p, int bpp)
{
  int32_t v = 0;
  memcpy(&v, p, (size_t)bpp);
  return _mm_unpacklo_epi8(_mm_cvtsi32_si128(v), _mm_setzero_si128());
}

INLINE void store_pixel(uint8_t *p, __m128i v, int bpp)
{
  int32_t w = _mm_cvtsi128_si32(_mm_packus_epi16(v, v));
  memcpy(p, &w, (size_t)bpp);
}

INLINE __m128i absolute(__m128i v) { return _mm_max_epi16(v, _mm_sub_epi16(_mm_setzero_si128(), v)); }

INLINE __m128i pick(__m128i mask, __m128i yes, __m128i no)
{
  return _mm_or_si128(_mm_and_si128(mask, yes), _mm_andnot_si128(mask, no));
}

/* One pixel of Sub (type 1), Average (3) or Paeth (4): `a` is the pixel to its left (in
 * and out), `c` the one above that, `b` the one above, all widened to 16-bit lanes. */
INLINE __m128i chained_pixel(int type, __m128i a, __m128i b, __m128i c, __m128i filtered)
{
  __m128i guess;
  if (type == 1) {
    guess = a;
  } else if (type == 3) {
    guess = _mm_srli_epi16(_mm_add_epi16(a, b), 1);
  } else {
    const __m128i to_b = _mm_sub_epi16(b, c), to_a = _mm_sub_epi16(a, c);
    const __m128i pa = absolute(to_b), pb = absolute(to_a);
    const __m128i pc = absolute(_mm_add_epi16(to_a, to_b));
    const __m128i least = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
    guess = pick(_mm_cmpeq_epi16(least, pa), a, pick(_mm_cmpeq_epi16(least, pb), b, c));
  }
  return _mm_and_si128(_mm_add_epi16(guess, filtered), _mm_set1_epi16(0xff));
}

/* Sub, Average or Paeth on one row, a pixel at a time (each depends on the one to its
 * left), its bytes side by side in 16-bit lanes. Pixels move 4 bytes at a time: for 3-byte
 * pixels the fourth byte read belongs to the next pixel and the fourth written is
 * rewritten by the next pixel, so the row's last pixel moves exactly its own 3 bytes. */
INLINE void chained_row(int type, const uint8_t *in, const uint8_t *up, uint8_t *out,
                        size_t width, int bpp)
{
  __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128();
  for (size_t x = 0; x + 1 < width; x++, in += bpp, up += bpp, out += bpp) {
    const __m128i b = load_pixel(up, 4);
    a = chained_pixel(type, a, b, c, load_pixel(in, 4));
    store_pixel(out, a, 4);
    c = b;
  }
  store_pixel(out, chained_pixel(type, a, load_pixel(up, bpp), c, load_pixel(in, bpp)), bpp);
}
#else
#define INLINE static inline

INLINE int distance(int v) { return v < 0 ? -v : v; }

INLINE uint8_t paeth(int a, int b, int c)
{
  const int pa = distance(b - c), pb = distance(a - c), pc = distance(a + b - 2 * c);
  return (uint8_t)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

/* The same, a byte at a time (no SSE2). */
INLINE void chained_row(int type, const uint8_t *in, const uint8_t *up, uint8_t *out,
                        size_t width, int bpp)
{
  const size_t row = width * (size_t)bpp;
  for (size_t i = 0; i < row; i++) {
    const int a = i >= (size_t)bpp ? out[i - bpp] : 0, c = i >= (size_t)bpp ? up[i - bpp] : 0;
    const int guess = type == 1 ? a : type == 3 ? (a + up[i]) >> 1 : paeth(a, up[i], c);
    out[i] = (uint8_t)(in[i] + guess);
  }
}
#endif

/* Every row of an image with `bpp`-byte pixels; 0, or -1 for an unknown filter type. */
INLINE int unfilter_rows(uint8_t *buffer, size_t width, size_t height, int bpp,
                         const uint8_t *zeros)
{
  const size_t row = width * (size_t)bpp;
  const uint8_t *up = zeros; /* the row above the first is zeros */
  for (size_t y = 0; y < height; y++) {
    const uint8_t type = buffer[y * (row + 1)];
    const uint8_t *in = buffer + y * (row + 1) + 1;
    uint8_t *out = buffer + y * row;
    switch (type) {
    case 0:
      memmove(out, in, row);
      break;
    case 2:
      for (size_t i = 0; i < row; i++) out[i] = (uint8_t)(in[i] + up[i]);
      break;
    case 1:
    case 3:
    case 4:
      chained_row(type, in, up, out, width, bpp);
      break;
    default:
      return -1;
    }
    up = out;
  }
  return 0;
}

static int unfilter3(uint8_t *b, size_t w, size_t h, const uint8_t *z) { return unfilter_rows(b, w, h, 3, z); }
static int unfilter4(uint8_t *b, size_t w, size_t h, const uint8_t *z) { return unfilter_rows(b, w, h, 4, z); }

static PyObject *unfilter(PyObject *module, PyObject *args)
{
  Py_buffer rows;
  Py_ssize_t width, height, bpp;
  (void)module;
  if (!PyArg_ParseTuple(args, "w*nnn", &rows, &width, &height, &bpp))
    return NULL;
  PyObject *result = NULL;
  if ((bpp != 3 && bpp != 4) || width <= 0 || height <= 0 ||
      width > (PY_SSIZE_T_MAX / height - 1) / bpp || rows.len != height * (width * bpp + 1)) {
    PyErr_SetString(PyExc_ValueError, "the buffer is not the filtered rows of that size");
    goto done;
  }
  uint8_t *zeros = PyMem_RawCalloc((size_t)(width * bpp), 1);
  if (zeros == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  int failed;
  Py_BEGIN_ALLOW_THREADS
  failed = (bpp == 3 ? unfilter3 : unfilter4)(rows.buf, (size_t)width, (size_t)height, zeros);
  Py_END_ALLOW_THREADS
  PyMem_RawFree(zeros);
  result = PyBool_FromLong(!failed);
done:
  PyBuffer_Release(&rows);
  return result;
}

static PyMethodDef methods[] = {
    {"unfilter", unfilter, METH_VARARGS,
     "unfilter(rows, width, height, bpp) -> bool: undo PNG's row filters in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "imgcompress_core._unfilter",
    "Undo PNG's row filters in place (the optional accelerator for PNGs).", -1, methods,
};

PyMODINIT_FUNC PyInit__unfilter(void) { return PyModule_Create(&definition); }
