#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* libpng reports errors by longjmp, which Swift cannot catch: this header-only wrapper keeps
   the setjmp on the C side and hands Swift a plain result. */

typedef struct {
  unsigned int width, height, channels, depth; /* depth 8 or 16 (16: little-endian samples) */
  unsigned char *pixels;                       /* malloc'd; free with free() */
  char message[160];                           /* set when pixels is NULL */
} modelgate_png_result;

typedef struct {
  const unsigned char *data;
  size_t size, offset;
} modelgate_png_source;

static void modelgate_png_read_fn(png_structp png, png_bytep out, png_size_t count) {
  modelgate_png_source *source = (modelgate_png_source *)png_get_io_ptr(png);
  if (source->offset + count > source->size) png_error(png, "truncated PNG data");
  memcpy(out, source->data + source->offset, count);
  source->offset += count;
}

static void modelgate_png_error_fn(png_structp png, png_const_charp message) {
  modelgate_png_result *result = (modelgate_png_result *)png_get_error_ptr(png);
  strncpy(result->message, message, sizeof(result->message) - 1);
  longjmp(png_jmpbuf(png), 1);
}

static void modelgate_png_warning_fn(png_structp png, png_const_charp message) { (void)png; (void)message; }

/* Decodes a PNG to 8- or 16-bit gray, gray+alpha, RGB or RGBA (palettes and low bit depths
   expanded, interlacing undone). Refuses images over max_pixels before allocating. */
static inline modelgate_png_result modelgate_png_decode(const unsigned char *data, size_t size, unsigned long long max_pixels) {
  modelgate_png_result result;
  memset(&result, 0, sizeof(result));
  modelgate_png_source source = {data, size, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &result, modelgate_png_error_fn, modelgate_png_warning_fn);
  if (!png) { strcpy(result.message, "out of memory"); return result; }
  png_infop info = png_create_info_struct(png);
  unsigned char *volatile pixels = NULL;
  png_bytep *volatile rows = NULL;
  if (!info || setjmp(png_jmpbuf(png))) {
    free(pixels);
    free(rows);
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    if (!result.message[0]) strcpy(result.message, "corrupt PNG data");
    result.pixels = NULL;
    return result;
  }
  png_set_read_fn(png, &source, modelgate_png_read_fn);
  png_set_user_limits(png, 100000, 100000);
  png_read_info(png, info);
  png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if ((unsigned long long)width * height > max_pixels) {
    snprintf(result.message, sizeof(result.message), "image of %ux%u pixels exceeds the limit of %llu", width, height, max_pixels);
    png_error(png, result.message);
  }
  int color = png_get_color_type(png, info);
  int depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_swap(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  unsigned int channels = png_get_channels(png, info);
  unsigned int out_depth = png_get_bit_depth(png, info);
  size_t row_bytes = png_get_rowbytes(png, info);
  pixels = (unsigned char *)malloc(row_bytes * height);
  rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
  if (!pixels || !rows) png_error(png, "out of memory");
  for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + y * row_bytes;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  result.width = width;
  result.height = height;
  result.channels = channels;
  result.depth = out_depth;
  result.pixels = pixels;
  return result;
}
