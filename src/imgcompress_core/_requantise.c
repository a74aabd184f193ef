/* Re-quantise a JPEG to the tables of another quality without decoding its pixels.
 *
 * The optional compiled accelerator of imgcompress_core._fast (docs/compression.md): a
 * 4:2:0 YCbCr or greyscale JPEG is read as its quantised DCT coefficients (libjpeg's
 * Huffman decoding only: no inverse DCT, upsampling or colour conversion), each
 * coefficient is scaled from its table's step to the step libjpeg's tables give
 * `quality` (rounded half away from zero), and the coefficients are written as a
 * baseline, Huffman-optimised JPEG (no colour conversion, downsampling or forward DCT):
 * a quarter to a third less CPU than decoding and encoding the pixels, for the same
 * tables and markers and, measured on the corpus, the same SSIMULACRA2
 * (benchmarks/RESULTS.md).
 *
 * requantise(data, quality) returns the new JPEG, or None when the image is not one it
 * takes (another subsampling or colour space, 12-bit or arithmetic-coded, a table
 * coarser than the target's anywhere, or any libjpeg warning or error: corrupt data is
 * left to the pixel path, which reports it). Out of memory raises MemoryError. The GIL is
 * released while libjpeg works. It is built when a C compiler and libjpeg's headers are
 * there at install time (pyproject.toml); without it the pixel path does everything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jerror.h>
#include <jpeglib.h>

enum outcome { DONE, NOT_TAKEN, FAILED, NO_MEMORY };

/* The scaling loop is compiled twice on x86-64 with glibc, for AVX2 and for the baseline
 * (SSE2) the wheel must run on, and the loader picks one by the CPU (an ifunc): the same
 * results, about 1.4 ms less per photo where AVX2 is there (benchmarks/RESULTS.md). */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define WIDEST_VECTORS __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef WIDEST_VECTORS
#define WIDEST_VECTORS
#endif

/* Both libjpeg objects' error managers: an error records its code in `*code` and jumps
 * back to `to`; nothing is printed. */
struct escape {
  struct jpeg_error_mgr pub;
  jmp_buf *to;
  int *code;
};

static void escape_on_error(j_common_ptr cinfo)
{
  struct escape *escape = (struct escape *)cinfo->err;
  *escape->code = cinfo->err->msg_code;
  longjmp(*escape->to, 1);
}

static void say_nothing(j_common_ptr cinfo) { (void)cinfo; }

static struct jpeg_error_mgr *guard(struct escape *escape, jmp_buf *to, int *code)
{
  jpeg_std_error(&escape->pub);
  escape->pub.error_exit = escape_on_error;
  escape->pub.output_message = say_nothing;
  escape->to = to;
  escape->code = code;
  return &escape->pub;
}

/* Whether the frame is one whose coefficients give the pixel path's output: greyscale,
 * or YCbCr at 4:2:0 with one table for luma and one shared by both chroma components. */
static int takes(const struct jpeg_decompress_struct *d)
{
  const jpeg_component_info *c = d->comp_info;
  if (d->data_precision != 8 || d->arith_code) return 0;
  if (d->num_components == 1) return d->jpeg_color_space == JCS_GRAYSCALE;
  return d->num_components == 3 && d->jpeg_color_space == JCS_YCbCr &&
         c[0].h_samp_factor == 2 && c[0].v_samp_factor == 2 &&
         c[1].h_samp_factor == 1 && c[1].v_samp_factor == 1 &&
         c[2].h_samp_factor == 1 && c[2].v_samp_factor == 1 &&
         c[0].quant_tbl_no != c[1].quant_tbl_no && c[1].quant_tbl_no == c[2].quant_tbl_no;
}

/* Put libjpeg's tables for `quality` into the slots the source's components use (luma's,
 * chroma's); 0 if a source step is coarser than its target anywhere (scaling up would
 * only add bytes: the pixel path re-encodes such an image). */
static int set_target_tables(j_compress_ptr c, const struct jpeg_decompress_struct *d,
                             int quality, JQUANT_TBL *source)
{
  for (int slot = 0; slot < NUM_QUANT_TBLS; slot++)
    if (c->quant_tbl_ptrs[slot]) source[slot] = *c->quant_tbl_ptrs[slot];
  jpeg_set_quality(c, quality, TRUE); /* slot 0: luma's table, slot 1: chroma's */
  JQUANT_TBL luma = *c->quant_tbl_ptrs[0], chroma = *c->quant_tbl_ptrs[1];
  for (int ci = 0; ci < d->num_components; ci++) {
    int slot = d->comp_info[ci].quant_tbl_no;
    JQUANT_TBL *target = c->quant_tbl_ptrs[slot];
    if (!target) return 0;
    *target = ci == 0 ? luma : chroma;
    for (int k = 0; k < DCTSIZE2; k++)
      if (source[slot].quantval[k] > target->quantval[k]) return 0;
  }
  return 1;
}

/* Scale every block of one component: c * old / new in 16.16 fixed point (a factor of at
 * most 65535, so that |c * factor| < 2^31 for any 16-bit c), rounded half away from zero,
 * branch-free so that the compiler vectorises it. */
WIDEST_VECTORS static void scale_component(j_decompress_ptr d, jvirt_barray_ptr blocks,
                            const jpeg_component_info *comp, const UINT16 *old,
                            const UINT16 *new)
{
  int factor[DCTSIZE2];
  for (int k = 0; k < DCTSIZE2; k++)
    factor[k] = old[k] >= new[k] ? 65535 : (int)((65536.0 * old[k]) / new[k] + 0.5);
  for (JDIMENSION row = 0; row < comp->height_in_blocks; row += comp->v_samp_factor) {
    JBLOCKARRAY rows = (*d->mem->access_virt_barray)((j_common_ptr)d, blocks, row,
                                                     (JDIMENSION)comp->v_samp_factor, TRUE);
    for (int r = 0; r < comp->v_samp_factor && row + r < comp->height_in_blocks; r++) {
      for (JDIMENSION b = 0; b < comp->width_in_blocks; b++) {
        JCOEF *coef = rows[r][b];
        for (int k = 0; k < DCTSIZE2; k++) {
          int v = coef[k] * factor[k];
          int sign = v >> 31; /* 0 or -1 */
          unsigned magnitude = (unsigned)((v ^ sign) - sign);
          int rounded = (int)((magnitude + 32768u) >> 16);
          coef[k] = (JCOEF)((rounded ^ sign) - sign);
        }
      }
    }
  }
}

/* The output: a malloc'd buffer that grows by doubling and that the caller owns at every
 * moment (libjpeg's jpeg_mem_dest frees the buffer it grew from and reports the new one
 * only when compression finishes, so after an error a caller's pointer would be stale). */
struct output {
  struct jpeg_destination_mgr pub;
  unsigned char *buffer;
  size_t size;
};

static void output_start(j_compress_ptr c) { (void)c; }
static void output_end(j_compress_ptr c) { (void)c; }

static boolean output_grow(j_compress_ptr c)
{
  struct output *out = (struct output *)c->dest;
  unsigned char *bigger = out->size > SIZE_MAX / 2 ? NULL : realloc(out->buffer, out->size * 2);
  if (!bigger) ERREXIT1(c, JERR_OUT_OF_MEMORY, 0);
  out->pub.next_output_byte = bigger + out->size; /* the whole old buffer was written */
  out->pub.free_in_buffer = out->size;
  out->buffer = bigger;
  out->size *= 2;
  return TRUE;
}

/* Everything libjpeg writes to, or that transcode changes after its setjmp and reads after
 * a longjmp: kept by the caller, outside the function that calls setjmp, so that none of
 * it is indeterminate after the jump. The caller frees out.buffer whatever the outcome. */
struct job {
  struct jpeg_decompress_struct d;
  struct jpeg_compress_struct c;
  struct escape d_err, c_err;
  struct output out;
  JQUANT_TBL source[NUM_QUANT_TBLS];
  jmp_buf on_error;
  int error_code;
  int compressing;
};

/* The whole transcode; on DONE, job->out.buffer holds the JPEG's *out_size bytes. */
static enum outcome transcode(struct job *job, const unsigned char *in, unsigned long in_size,
                              int quality, size_t *out_size)
{
  struct jpeg_decompress_struct *d = &job->d;
  struct jpeg_compress_struct *c = &job->c;
  volatile enum outcome outcome = NOT_TAKEN;

  job->out.buffer = NULL;
  job->compressing = 0;
  job->error_code = 0;
  d->err = guard(&job->d_err, &job->on_error, &job->error_code);
  c->err = guard(&job->c_err, &job->on_error, &job->error_code);
  if (setjmp(job->on_error)) {
    outcome = job->error_code == JERR_OUT_OF_MEMORY ? NO_MEMORY : FAILED;
    goto finish;
  }
  jpeg_create_decompress(d);
  jpeg_mem_src(d, in, in_size);
  jpeg_read_header(d, TRUE);
  if (!takes(d)) goto finish;
  jvirt_barray_ptr *coefficients = jpeg_read_coefficients(d);
  if (!coefficients || job->d_err.pub.num_warnings) goto finish; /* the pixel path reports */

  job->compressing = 1; /* jpeg_create_compress clears c->mem first: destroying is safe */
  jpeg_create_compress(c);
  job->out.size = in_size / 4 > 65536 ? in_size / 4 : 65536;
  job->out.buffer = malloc(job->out.size);
  if (!job->out.buffer) ERREXIT1(c, JERR_OUT_OF_MEMORY, 0);
  job->out.pub.init_destination = output_start;
  job->out.pub.empty_output_buffer = output_grow;
  job->out.pub.term_destination = output_end;
  job->out.pub.next_output_byte = job->out.buffer;
  job->out.pub.free_in_buffer = job->out.size;
  c->dest = &job->out.pub;
  jpeg_copy_critical_parameters(d, c);
  /* the JFIF header the pixel path writes: version 1.01, no density */
  c->JFIF_major_version = 1;
  c->JFIF_minor_version = 1;
  c->density_unit = 0;
  c->X_density = c->Y_density = 1;
  c->optimize_coding = TRUE;
  if (!set_target_tables(c, d, quality, job->source)) goto finish;
  for (int ci = 0; ci < d->num_components; ci++) {
    int slot = d->comp_info[ci].quant_tbl_no;
    scale_component(d, coefficients[ci], &d->comp_info[ci], job->source[slot].quantval,
                    c->quant_tbl_ptrs[slot]->quantval);
  }
  jpeg_write_coefficients(c, coefficients);
  jpeg_finish_compress(c);
  *out_size = job->out.size - job->out.pub.free_in_buffer;
  outcome = DONE;

finish:
  if (job->compressing) jpeg_destroy_compress(c);
  jpeg_destroy_decompress(d);
  return outcome;
}

static PyObject *requantise(PyObject *module, PyObject *args)
{
  Py_buffer data;
  int quality;
  size_t out_size = 0;
  enum outcome outcome;
  struct job *job;
  (void)module;
  if (!PyArg_ParseTuple(args, "y*i:requantise", &data, &quality)) return NULL;
  if (quality < 1 || quality > 100) {
    PyBuffer_Release(&data);
    return PyErr_Format(PyExc_ValueError, "quality must be from 1 to 100, not %d", quality);
  }
  if (data.len < 4 || (unsigned long long)data.len > ULONG_MAX) {
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
  }
  job = malloc(sizeof *job);
  if (!job) {
    PyBuffer_Release(&data);
    return PyErr_NoMemory();
  }
  Py_BEGIN_ALLOW_THREADS
  outcome = transcode(job, data.buf, (unsigned long)data.len, quality, &out_size);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&data);
  PyObject *result = NULL;
  if (outcome == DONE)
    result = PyBytes_FromStringAndSize((const char *)job->out.buffer, (Py_ssize_t)out_size);
  else if (outcome == NO_MEMORY)
    PyErr_NoMemory();
  else
    result = Py_NewRef(Py_None);
  free(job->out.buffer);
  free(job);
  return result;
}

static PyMethodDef methods[] = {
  { "requantise", requantise, METH_VARARGS,
    "requantise(data, quality) -> bytes | None: re-quantise a 4:2:0 or grey JPEG to "
    "quality's tables without decoding its pixels; None when it does not take it." },
  { NULL, NULL, 0, NULL },
};

static struct PyModuleDef definition = {
  PyModuleDef_HEAD_INIT, "_requantise",
  "Re-quantise a JPEG to the tables of another quality without decoding its pixels.", -1,
  methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__requantise(void) { return PyModule_Create(&definition); }
