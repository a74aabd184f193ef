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
 * The Huffman tables are optimised without libjpeg's gathering pass, which walks each
 * block's 63 coefficients one at a time and costs twice the pass that writes them: the
 * symbols are counted while the coefficients are scaled, from each block's bitmap of
 * non-zero coefficients, and the tables are built from the counts by the JPEG
 * specification's procedure (Annex K.2) as libjpeg builds them, so the bytes are those
 * of libjpeg's two passes (the tests build the file with REQUANTISE_TWO_PASSES, which
 * lets libjpeg gather, and compare).
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
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* Huffman symbol counts of the scan the writer will emit, per table slot (0: luma or
 * grey, 1: both chroma components), with room for the reserved symbol 256 the table
 * procedure adds. */
struct counts {
  long dc[2][257];
  long ac[2][257];
};

/* The biggest magnitudes a baseline JPEG can code (libjpeg refuses larger ones when it
 * gathers): 11 bits for a DC difference, 10 for an AC coefficient. */
enum { MAX_DC_BITS = 11, MAX_AC_BITS = 10 };

/* natural_of[z]: the block index of the z-th coefficient in zig-zag order; zigzag_of is
 * its inverse. Filled once, by walking the anti-diagonals (JPEG's Figure A.6). */
static int natural_of[DCTSIZE2], zigzag_of[DCTSIZE2];

static void make_zigzag(void)
{
  int z = 0;
  for (int diagonal = 0; diagonal < 2 * DCTSIZE - 1; diagonal++) {
    int first = diagonal < DCTSIZE ? 0 : diagonal - DCTSIZE + 1;
    int last = diagonal < DCTSIZE ? diagonal : DCTSIZE - 1;
    for (int i = 0; i <= last - first; i++) {
      int row = diagonal % 2 ? first + i : last - i; /* odd diagonals run down-left */
      natural_of[z++] = row * DCTSIZE + diagonal - row;
    }
  }
  for (z = 0; z < DCTSIZE2; z++) zigzag_of[natural_of[z]] = z;
}

static int bit_length(unsigned value)
{
#if defined(__GNUC__) || defined(__clang__)
  return value ? 32 - __builtin_clz(value) : 0;
#else
  int bits = 0;
  for (; value; value >>= 1) bits++;
  return bits;
#endif
}

static int lowest_bit(uint64_t bits)
{
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(bits);
#else
  int n = 0;
  while (!(bits & 1)) {
    bits >>= 1;
    n++;
  }
  return n;
#endif
}

/* Bit k set when the block's k-th coefficient (natural order) is not zero. */
static uint64_t nonzero_bits(const JCOEF *coef)
{
  uint64_t bits = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (int i = 0; i < DCTSIZE2 / 16; i++) {
    __m128i low = _mm_cmpeq_epi16(_mm_loadu_si128((const __m128i *)(coef + 16 * i)), zero);
    __m128i high = _mm_cmpeq_epi16(_mm_loadu_si128((const __m128i *)(coef + 16 * i + 8)), zero);
    unsigned zeros = (unsigned)_mm_movemask_epi8(_mm_packs_epi16(low, high));
    bits |= (uint64_t)(~zeros & 0xFFFFu) << (16 * i);
  }
#else
  for (int k = 0; k < DCTSIZE2; k++) bits |= (uint64_t)(coef[k] != 0) << k;
#endif
  return bits;
}

/* Count one block's AC symbols as libjpeg's gathering pass would: each non-zero
 * coefficient in zig-zag order as (zeros before it, its bit length), 16 zeros as 0xF0,
 * and an end-of-block when the last coefficient is zero. 0 if one is too big to code. */
static int count_ac(const JCOEF *coef, long *ac)
{
  uint64_t natural = nonzero_bits(coef) & ~(uint64_t)1, zigzag = 0;
  while (natural) {
    zigzag |= (uint64_t)1 << zigzag_of[lowest_bit(natural)];
    natural &= natural - 1;
  }
  int previous = 0;
  while (zigzag) {
    int z = lowest_bit(zigzag);
    int value = coef[natural_of[z]], run = z - previous - 1;
    int bits = bit_length((unsigned)(value < 0 ? -value : value));
    if (bits > MAX_AC_BITS) return 0;
    for (; run > 15; run -= 16) ac[0xF0]++;
    ac[(run << 4) + bits]++;
    previous = z;
    zigzag &= zigzag - 1;
  }
  if (previous < DCTSIZE2 - 1) ac[0]++;
  return 1;
}

/* Count one component's DC differences in the order the scan codes its blocks: MCU by
 * MCU and, within one, its h x v blocks row by row (one block an MCU when the component
 * is alone in the scan). A block the writer adds to fill an MCU at the right or bottom
 * edge repeats the DC before it and codes nothing else: a zero difference and an
 * end-of-block. 0 if a difference is too big to code. */
static int count_dc(j_decompress_ptr d, jvirt_barray_ptr blocks, const jpeg_component_info *comp,
                    long *dc, long *ac)
{
  int interleaved = d->num_components > 1;
  int h = interleaved ? comp->h_samp_factor : 1, v = interleaved ? comp->v_samp_factor : 1;
  JDIMENSION mcu_width = (JDIMENSION)(DCTSIZE * d->max_h_samp_factor);
  JDIMENSION mcu_height = (JDIMENSION)(DCTSIZE * d->max_v_samp_factor);
  JDIMENSION columns = interleaved ? (d->image_width + mcu_width - 1) / mcu_width
                                   : comp->width_in_blocks;
  JDIMENSION rows = interleaved ? (d->image_height + mcu_height - 1) / mcu_height
                                : comp->height_in_blocks;
  int last = 0;
  long filled = 0;
  for (JDIMENSION mcu_row = 0; mcu_row < rows; mcu_row++) {
    JDIMENSION top = mcu_row * (JDIMENSION)v;
    JBLOCKARRAY block_rows =
        (*d->mem->access_virt_barray)((j_common_ptr)d, blocks, top, (JDIMENSION)v, FALSE);
    for (JDIMENSION mcu = 0; mcu < columns; mcu++)
      for (int y = 0; y < v; y++)
        for (int x = 0; x < h; x++) {
          JDIMENSION column = mcu * (JDIMENSION)h + (JDIMENSION)x;
          if (top + (JDIMENSION)y >= comp->height_in_blocks || column >= comp->width_in_blocks) {
            filled++;
            continue;
          }
          int value = block_rows[y][column][0], difference = value - last;
          int bits = bit_length((unsigned)(difference < 0 ? -difference : difference));
          if (bits > MAX_DC_BITS) return 0;
          dc[bits]++;
          last = value;
        }
  }
  dc[0] += filled;
  ac[0] += filled;
  return 1;
}

/* Build the optimal table for `freq` (which it changes) as the JPEG specification's
 * Annex K.2 does, the way libjpeg does: one code point reserved (symbol 256) so that no
 * code is all ones, ties between equal counts broken towards the larger symbol, counts
 * over a billion left out of the pairing as libjpeg leaves them, code lengths over 16
 * folded back by Figure K.3, symbols listed by code length. 0 when a code would be longer
 * than 32 bits before folding (libjpeg refuses the image then too). */
static int optimal_table(long *freq, JHUFF_TBL *table)
{
  int size[257] = { 0 }, next[257], bits[33] = { 0 };
  for (int i = 0; i < 257; i++) next[i] = -1;
  freq[256] = 1;
  for (;;) {
    int c1 = -1, c2 = -1;
    long least = 1000000000L;
    for (int i = 0; i <= 256; i++)
      if (freq[i] && freq[i] <= least) least = freq[i], c1 = i;
    least = 1000000000L;
    for (int i = 0; i <= 256; i++)
      if (freq[i] && freq[i] <= least && i != c1) least = freq[i], c2 = i;
    if (c2 < 0) break;
    freq[c1] += freq[c2];
    freq[c2] = 0;
    for (size[c1]++; next[c1] >= 0; size[c1]++) c1 = next[c1];
    next[c1] = c2;
    for (size[c2]++; next[c2] >= 0; size[c2]++) c2 = next[c2];
  }
  for (int i = 0; i <= 256; i++)
    if (size[i] > 32)
      return 0;
    else if (size[i])
      bits[size[i]]++;
  for (int i = 32; i > 16; i--)
    while (bits[i] > 0) {
      int j = i - 2;
      while (bits[j] == 0) j--;
      bits[i] -= 2;
      bits[i - 1]++;
      bits[j + 1] += 2;
      bits[j]--;
    }
  int longest = 16;
  while (bits[longest] == 0) longest--;
  bits[longest]--; /* the reserved code point */
  for (int i = 0; i <= 16; i++) table->bits[i] = (UINT8)bits[i];
  int p = 0;
  for (int length = 1; length <= 32; length++)
    for (int symbol = 0; symbol < 256; symbol++)
      if (size[symbol] == length) table->huffval[p++] = (UINT8)symbol;
  table->sent_table = FALSE;
  return 1;
}

/* Put the optimal tables for the counts into the slots the writer's components use; 0
 * if one cannot be built. */
static int set_huffman_tables(j_compress_ptr c, struct counts *counts, int slots)
{
  for (int slot = 0; slot < slots; slot++) {
    if (!c->dc_huff_tbl_ptrs[slot])
      c->dc_huff_tbl_ptrs[slot] = jpeg_alloc_huff_table((j_common_ptr)c);
    if (!c->ac_huff_tbl_ptrs[slot])
      c->ac_huff_tbl_ptrs[slot] = jpeg_alloc_huff_table((j_common_ptr)c);
    if (!optimal_table(counts->dc[slot], c->dc_huff_tbl_ptrs[slot]) ||
        !optimal_table(counts->ac[slot], c->ac_huff_tbl_ptrs[slot]))
      return 0;
  }
  return 1;
}

/* Scale every block of one component: c * old / new in 16.16 fixed point (a factor of at
 * most 65535, so that |c * factor| < 2^31 for any 16-bit c), rounded half away from zero,
 * branch-free so that the compiler vectorises it; count each block's AC symbols into `ac`
 * unless it is NULL. 0 if a coefficient is too big to code. */
WIDEST_VECTORS static int scale_component(j_decompress_ptr d, jvirt_barray_ptr blocks,
                           const jpeg_component_info *comp, const UINT16 *old,
                           const UINT16 *new, long *ac)
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
        if (ac && !count_ac(coef, ac)) return 0;
      }
    }
  }
  return 1;
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
  struct counts counts;
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
  if (!set_target_tables(c, d, quality, job->source)) goto finish;
#ifdef REQUANTISE_TWO_PASSES /* libjpeg gathers the counts itself (the tests' reference) */
  c->optimize_coding = TRUE;
  for (int ci = 0; ci < d->num_components; ci++) {
    int slot = d->comp_info[ci].quant_tbl_no;
    scale_component(d, coefficients[ci], &d->comp_info[ci], job->source[slot].quantval,
                    c->quant_tbl_ptrs[slot]->quantval, NULL);
  }
#else
  c->optimize_coding = FALSE;
  memset(&job->counts, 0, sizeof job->counts);
  for (int ci = 0; ci < d->num_components; ci++) {
    jpeg_component_info *comp = &c->comp_info[ci]; /* the writer's: its Huffman slots */
    int slot = d->comp_info[ci].quant_tbl_no;
    if (comp->dc_tbl_no > 1 || comp->ac_tbl_no > 1) goto finish;
    long *dc = job->counts.dc[comp->dc_tbl_no], *ac = job->counts.ac[comp->ac_tbl_no];
    if (!scale_component(d, coefficients[ci], &d->comp_info[ci], job->source[slot].quantval,
                         c->quant_tbl_ptrs[slot]->quantval, ac) ||
        !count_dc(d, coefficients[ci], &d->comp_info[ci], dc, ac)) {
      outcome = FAILED; /* libjpeg would refuse to code it: the pixel path reports */
      goto finish;
    }
  }
  if (!set_huffman_tables(c, &job->counts, d->num_components > 1 ? 2 : 1)) {
    outcome = FAILED;
    goto finish;
  }
#endif
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

PyMODINIT_FUNC PyInit__requantise(void)
{
  make_zigzag();
  return PyModule_Create(&definition);
}
