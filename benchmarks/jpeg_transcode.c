/* What re-quantising a JPEG in the DCT domain would save, measured in libjpeg itself.
 *
 * The pipeline re-encodes a JPEG by decoding it to RGB and encoding the pixels at quality
 * 50 (4:2:0, Huffman-optimised). The alternative: read the quantised DCT coefficients
 * (no inverse DCT, upsampling or colour conversion), scale each to the quality-50 tables
 * (round(c * q_old / q_new)) and write them (no colour conversion, downsampling or
 * forward DCT). This program times both on every file, one thread, and prints the CPU per
 * image of each step with the output sizes. It is C because the coefficient API needs
 * libjpeg's setjmp error handling, which Python (ctypes) cannot give it.
 *
 * Build and run (Debian: apt-get install gcc libjpeg62-turbo-dev), against the
 * libjpeg-turbo that Pillow's wheel bundles, or with -ljpeg against the system's:
 *
 *   L=.venv/lib/python3.11/site-packages/pillow.libs
 *   cc -O3 -march=native benchmarks/jpeg_transcode.c -o /tmp/jpeg_transcode \
 *      $L/libjpeg-*.so.62* -Wl,-rpath,$PWD/$L
 *   /tmp/jpeg_transcode 5 ../shared/corpus/[j]*.jpg
 *
 * The first argument is the number of rounds (alternating, median per step reported).
 * Only 8-bit YCbCr 4:2:0 and greyscale files are taken (the others would need chroma
 * resampling, which a coefficient path cannot do); the rest are listed and skipped.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>

#define QUALITY 50
#define MAX_FILES 1024
#define MAX_ROUNDS 21

struct guarded_error {
  struct jpeg_error_mgr pub;
  jmp_buf escape;
};

static void escape_on_error(j_common_ptr cinfo)
{
  struct guarded_error *err = (struct guarded_error *)cinfo->err;
  (*cinfo->err->output_message)(cinfo);
  longjmp(err->escape, 1);
}

static double cpu_seconds(void)
{
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static unsigned char *read_file(const char *path, unsigned long *size)
{
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  unsigned char *data = malloc(n > 0 ? n : 1);
  if (!data || fread(data, 1, n, f) != (size_t)n) {
    fclose(f);
    free(data);
    return NULL;
  }
  fclose(f);
  *size = (unsigned long)n;
  return data;
}

/* Start decompressing `data` (a libjpeg failure jumps to the caller's setjmp). */
static void open_source(struct jpeg_decompress_struct *d, struct guarded_error *err,
                        unsigned char *data, unsigned long size)
{
  d->err = jpeg_std_error(&err->pub);
  err->pub.error_exit = escape_on_error;
  jpeg_create_decompress(d);
  jpeg_mem_src(d, data, size);
  jpeg_read_header(d, TRUE);
}

/* Whether the coefficient path can give the pipeline's output: 4:2:0 YCbCr or grey. */
static int takes(const unsigned char *data, unsigned long size)
{
  struct jpeg_decompress_struct d;
  struct guarded_error err;
  volatile int ok = 0;
  if (setjmp(err.escape)) {
    jpeg_destroy_decompress(&d);
    return 0;
  }
  open_source(&d, &err, (unsigned char *)data, size);
  if (d.jpeg_color_space == JCS_GRAYSCALE && d.num_components == 1)
    ok = 1;
  else if (d.jpeg_color_space == JCS_YCbCr && d.num_components == 3 &&
           d.comp_info[0].h_samp_factor == 2 && d.comp_info[0].v_samp_factor == 2 &&
           d.comp_info[1].h_samp_factor == 1 && d.comp_info[1].v_samp_factor == 1 &&
           d.comp_info[2].h_samp_factor == 1 && d.comp_info[2].v_samp_factor == 1 &&
           d.comp_info[0].quant_tbl_no != d.comp_info[1].quant_tbl_no &&
           d.comp_info[1].quant_tbl_no == d.comp_info[2].quant_tbl_no)
    ok = 1;
  jpeg_destroy_decompress(&d);
  return ok;
}

/* Decode to RGB (or grey) rows and throw them away: the decode half of the pipeline. */
static void decode_pixels(unsigned char *data, unsigned long size, unsigned char **pixels,
                          int *width, int *height, int *components)
{
  struct jpeg_decompress_struct d;
  struct guarded_error err;
  if (setjmp(err.escape)) exit(2);
  open_source(&d, &err, data, size);
  if (d.num_components == 3) d.out_color_space = JCS_RGB;
  jpeg_start_decompress(&d);
  *width = d.output_width;
  *height = d.output_height;
  *components = d.output_components;
  size_t stride = (size_t)d.output_width * d.output_components;
  if (pixels) *pixels = malloc(stride * d.output_height);
  unsigned char *scratch = pixels ? NULL : malloc(stride);
  while (d.output_scanline < d.output_height) {
    JSAMPROW row = pixels ? *pixels + stride * d.output_scanline : scratch;
    jpeg_read_scanlines(&d, &row, 1);
  }
  free(scratch);
  jpeg_finish_decompress(&d);
  jpeg_destroy_decompress(&d);
}

/* Encode pixels at QUALITY, 4:2:0, Huffman-optimised: the encode half of the pipeline. */
static unsigned long encode_pixels(unsigned char *pixels, int width, int height,
                                   int components)
{
  struct jpeg_compress_struct c;
  struct guarded_error err;
  unsigned char *out = NULL;
  unsigned long out_size = 0;
  c.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = escape_on_error;
  if (setjmp(err.escape)) exit(2);
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, &out, &out_size);
  c.image_width = width;
  c.image_height = height;
  c.input_components = components;
  c.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, QUALITY, TRUE);
  c.optimize_coding = TRUE;
  jpeg_start_compress(&c, TRUE);
  size_t stride = (size_t)width * components;
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = pixels + stride * c.next_scanline;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  free(out);
  return out_size;
}

/* Scale one row of blocks from the old table to the new one: c * scale in 16.16 fixed
 * point (at most 65535), rounded half away from zero; branch-free, so that the compiler
 * vectorises it. */
static void requantise_row(JBLOCKROW blocks, JDIMENSION count, const int *scale)
{
  for (JDIMENSION b = 0; b < count; b++) {
    JCOEF *c = blocks[b];
    for (int k = 0; k < DCTSIZE2; k++) {
      int v = c[k] * scale[k];
      int sign = v >> 31; /* 0 or -1 */
      unsigned magnitude = (unsigned)((v ^ sign) - sign);
      int rounded = (int)((magnitude + 32768u) >> 16);
      c[k] = (JCOEF)((rounded ^ sign) - sign);
    }
  }
}

struct coefficient_times {
  double read, requantise, write;
  unsigned long bytes, blocks;
};

/* Read the coefficients, optionally re-quantise them to QUALITY's tables, write them. */
static struct coefficient_times transcode(unsigned char *data, unsigned long size,
                                          int requantise)
{
  struct coefficient_times t = { 0, 0, 0, 0, 0 };
  struct jpeg_decompress_struct d;
  struct jpeg_compress_struct c;
  struct guarded_error derr, cerr;
  unsigned char *out = NULL;
  unsigned long out_size = 0;
  if (setjmp(derr.escape)) exit(2);
  double started = cpu_seconds();
  open_source(&d, &derr, data, size);
  jvirt_barray_ptr *coefficients = jpeg_read_coefficients(&d);
  double read = cpu_seconds();

  c.err = jpeg_std_error(&cerr.pub);
  cerr.pub.error_exit = escape_on_error;
  if (setjmp(cerr.escape)) exit(2);
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, &out, &out_size);
  jpeg_copy_critical_parameters(&d, &c);
  c.optimize_coding = TRUE;
  if (requantise) {
    JQUANT_TBL old[NUM_QUANT_TBLS];
    for (int q = 0; q < NUM_QUANT_TBLS; q++)
      if (c.quant_tbl_ptrs[q]) old[q] = *c.quant_tbl_ptrs[q];
    /* libjpeg's tables at QUALITY, into the slots the source uses for luma and chroma */
    jpeg_set_quality(&c, QUALITY, TRUE);
    int luma = d.comp_info[0].quant_tbl_no;
    if (luma != 0) *c.quant_tbl_ptrs[luma] = *c.quant_tbl_ptrs[0];
    if (d.num_components == 3) {
      int chroma = d.comp_info[1].quant_tbl_no;
      if (chroma != 1) *c.quant_tbl_ptrs[chroma] = *c.quant_tbl_ptrs[1];
    }
    for (int ci = 0; ci < d.num_components; ci++) {
      jpeg_component_info *comp = d.comp_info + ci;
      int q = comp->quant_tbl_no;
      int scale[DCTSIZE2];
      for (int k = 0; k < DCTSIZE2; k++)
        scale[k] = old[q].quantval[k] >= c.quant_tbl_ptrs[q]->quantval[k]
                       ? 65535 /* |c * scale| < 2^31 for any 16-bit c */
                       : (int)((65536.0 * old[q].quantval[k]) / c.quant_tbl_ptrs[q]->quantval[k] + 0.5);
      for (JDIMENSION row = 0; row < comp->height_in_blocks; row += comp->v_samp_factor) {
        JBLOCKARRAY rows = (*d.mem->access_virt_barray)((j_common_ptr)&d, coefficients[ci],
                                                        row, comp->v_samp_factor, TRUE);
        for (int r = 0; r < comp->v_samp_factor && row + r < comp->height_in_blocks; r++) {
          requantise_row(rows[r], comp->width_in_blocks, scale);
          t.blocks += comp->width_in_blocks;
        }
      }
    }
  }
  double scaled = cpu_seconds();
  jpeg_write_coefficients(&c, coefficients);
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  jpeg_finish_decompress(&d);
  jpeg_destroy_decompress(&d);
  free(out);
  double written = cpu_seconds();
  t.read = read - started;
  t.requantise = scaled - read;
  t.write = written - scaled;
  t.bytes = out_size;
  return t;
}

static int by_value(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *values, int n)
{
  qsort(values, n, sizeof(double), by_value);
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

enum { DECODE, ENCODE, READ, COPY_WRITE, REQUANTISE, REQUANT_WRITE, STEPS };
static const char *step_names[STEPS] = {
  "decode to RGB (inverse DCT, upsampling, colour)",
  "encode the pixels at q50 (colour, downsampling, forward DCT, 2 Huffman passes)",
  "read the coefficients (Huffman decode only)",
  "write them unchanged (2 Huffman passes)",
  "re-quantise them to the q50 tables (compiled loop)",
  "write the re-quantised ones (2 Huffman passes)",
};

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: %s ROUNDS FILE.jpg...\n", argv[0]);
    return 1;
  }
  int rounds = atoi(argv[1]);
  if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 3;
  unsigned char *files[MAX_FILES];
  unsigned long sizes[MAX_FILES];
  int n = 0;
  for (int i = 2; i < argc && n < MAX_FILES; i++) {
    unsigned long size;
    unsigned char *data = read_file(argv[i], &size);
    if (!data || !takes(data, size)) {
      printf("skipped (not 4:2:0 YCbCr or grey, or unreadable): %s\n", argv[i]);
      free(data);
      continue;
    }
    files[n] = data;
    sizes[n++] = size;
  }
  if (!n) return 1;

  double per_round[STEPS][MAX_ROUNDS];
  unsigned long pixel_bytes = 0, requant_bytes = 0, blocks = 0, input_bytes = 0;
  for (int round = 0; round < rounds; round++) {
    double total[STEPS] = { 0 };
    pixel_bytes = requant_bytes = blocks = input_bytes = 0;
    for (int i = 0; i < n; i++) {
      unsigned char *pixels;
      int width, height, components;
      double started = cpu_seconds();
      decode_pixels(files[i], sizes[i], &pixels, &width, &height, &components);
      double decoded = cpu_seconds();
      pixel_bytes += encode_pixels(pixels, width, height, components);
      total[ENCODE] += cpu_seconds() - decoded;
      total[DECODE] += decoded - started;
      free(pixels);
      struct coefficient_times copy = transcode(files[i], sizes[i], 0);
      struct coefficient_times requant = transcode(files[i], sizes[i], 1);
      total[READ] += (copy.read + requant.read) / 2;
      total[COPY_WRITE] += copy.write;
      total[REQUANTISE] += requant.requantise;
      total[REQUANT_WRITE] += requant.write;
      requant_bytes += requant.bytes;
      blocks += requant.blocks;
      input_bytes += sizes[i];
    }
    for (int s = 0; s < STEPS; s++) per_round[s][round] = 1000 * total[s] / n;
  }
  double ms[STEPS];
  for (int s = 0; s < STEPS; s++) ms[s] = median(per_round[s], rounds);
  printf("%d JPEGs, %lu bytes in, %.2f M blocks of coefficients an image on average, "
         "median of %d rounds, CPU ms per image, one thread\n",
         n, input_bytes, blocks / 1e6 / n, rounds);
  for (int s = 0; s < STEPS; s++) printf("  %-80s %6.2f\n", step_names[s], ms[s]);
  double pixel_path = ms[DECODE] + ms[ENCODE];
  double coefficient_path = ms[READ] + ms[REQUANTISE] + ms[REQUANT_WRITE];
  printf("pixel path (the pipeline's)  %.2f ms, %lu bytes\n", pixel_path, pixel_bytes);
  printf("coefficient path             %.2f ms (%.0f %% of it), %lu bytes (%+.1f %%)\n",
         coefficient_path, 100 * coefficient_path / pixel_path, requant_bytes,
         100.0 * requant_bytes / pixel_bytes - 100);
  printf("  without the re-quantising  %.2f ms (%.0f %%)\n", ms[READ] + ms[REQUANT_WRITE],
         100 * (ms[READ] + ms[REQUANT_WRITE]) / pixel_path);
  return 0;
}
