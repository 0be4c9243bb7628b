/*
 * hanasc C API example: classify one image with a hanasc bundle and print the top 5 (index, score).
 *
 *   c-app IMAGE [BUNDLE_DIR] [--dump OUT.bin]
 *
 * IMAGE is either a raw float32 file (.bin, C order, exactly the model input's size) or a binary PGM (P5,
 * one channel) / PPM (P6, three channels) whose width and height are the input's (NCHW); pixels are
 * scaled to [0, 1] and written channel by channel. BUNDLE_DIR: open that bundle folder; without it, the
 * model embedded in the linked library is used. --dump writes the raw output bytes (for checks).
 * Exit codes: 0 ok, 1 a hanasc_model call failed (its message is printed), 2 bad usage or image.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hanasc_model.h"

static void *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  void *data = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = malloc(n > 0 ? (size_t)n : 1);
    if (data != NULL && fread(data, 1, (size_t)n, f) != (size_t)n) {
      free(data);
      data = NULL;
    }
    *size = (size_t)n;
  }
  fclose(f);
  return data;
}

/* A P5/P6 image into planar float32 in [0, 1]; 0 when its size is not the input's (N=1, C, H, W). */
static int pnm_to_input(const unsigned char *raw, size_t size, const hanasc_tensor_info *in, float *out) {
  int width, height, maxval, offset, channels;
  int64_t c, y, x;
  if (size < 2 || raw[0] != 'P' || (raw[1] != '5' && raw[1] != '6')) return 0;
  channels = raw[1] == '5' ? 1 : 3;
  if (sscanf((const char *)raw + 2, "%d %d %d%n", &width, &height, &maxval, &offset) != 3) return 0;
  offset += 3; /* "P5" and the single whitespace after maxval */
  if (in->ndim != 4 || in->shape[0] != 1 || in->shape[1] != channels || in->shape[2] != height ||
      in->shape[3] != width || maxval != 255 || (size_t)offset + (size_t)(width * height * channels) > size) {
    return 0;
  }
  for (c = 0; c < channels; ++c)
    for (y = 0; y < height; ++y)
      for (x = 0; x < width; ++x)
        out[(c * height + y) * width + x] = raw[offset + (y * width + x) * channels + c] / 255.0f;
  return 1;
}

static int fail(const char *what) {
  fprintf(stderr, "c-app: %s: %s\n", what, hanasc_model_last_error());
  return 1;
}

int main(int argc, char **argv) {
  const char *image = NULL, *bundle = NULL, *dump = NULL;
  hanasc_model *model = NULL;
  hanasc_tensor_info in, out;
  void *raw, *input;
  float *scores;
  size_t raw_size, i;
  int arg, rank, best[5];
  for (arg = 1; arg < argc; ++arg) {
    if (strcmp(argv[arg], "--dump") == 0 && arg + 1 < argc) dump = argv[++arg];
    else if (image == NULL) image = argv[arg];
    else if (bundle == NULL) bundle = argv[arg];
    else image = NULL, arg = argc;
  }
  if (image == NULL) {
    fprintf(stderr, "usage: c-app IMAGE [BUNDLE_DIR] [--dump OUT.bin]\n");
    return 2;
  }
  if ((bundle ? hanasc_model_create(bundle, &model) : hanasc_model_create_embedded(&model)) != HANASC_OK)
    return fail("loading the model");
  if (hanasc_model_num_inputs(model) != 1 || hanasc_model_input_info(model, 0, &in) != HANASC_OK ||
      hanasc_model_output_info(model, 0, &out) != HANASC_OK || strcmp(in.dtype, "float32") != 0 ||
      strcmp(out.dtype, "float32") != 0) {
    fprintf(stderr, "c-app: this example takes models with one float32 input and a float32 output\n");
    hanasc_model_destroy(model);
    return 2;
  }
  raw = read_file(image, &raw_size);
  input = malloc(in.nbytes);
  scores = malloc(out.nbytes);
  if (raw == NULL || input == NULL || scores == NULL) {
    fprintf(stderr, "c-app: cannot read %s\n", image);
    return 2;
  }
  if (raw_size == in.nbytes) {
    memcpy(input, raw, in.nbytes);
  } else if (!pnm_to_input(raw, raw_size, &in, input)) {
    fprintf(stderr, "c-app: %s: %lu bytes is neither a raw float32 input (%lu bytes) nor a P5/P6 image "
            "of the input's size\n", image, (unsigned long)raw_size, (unsigned long)in.nbytes);
    return 2;
  }
  {
    const void *inputs[1];
    void *outputs[1];
    size_t in_sizes[1], out_sizes[1];
    inputs[0] = input, outputs[0] = scores, in_sizes[0] = in.nbytes, out_sizes[0] = out.nbytes;
    if (hanasc_model_run(model, inputs, in_sizes, outputs, out_sizes) != HANASC_OK) {
      return fail("running the model");
    }
  }
  if (dump != NULL) {
    FILE *f = fopen(dump, "wb");
    if (f == NULL || fwrite(scores, 1, out.nbytes, f) != out.nbytes) {
      fprintf(stderr, "c-app: cannot write %s\n", dump);
      return 2;
    }
    fclose(f);
  }
  printf("model %s: input %s, output %s, %lu scores\n", bundle ? bundle : "(embedded)", in.name, out.name,
         (unsigned long)(out.nbytes / sizeof(float)));
  for (rank = 0; rank < 5 && rank < (int)(out.nbytes / sizeof(float)); ++rank) {
    best[rank] = -1;
    for (i = 0; i < out.nbytes / sizeof(float); ++i) {
      int taken = 0, r;
      for (r = 0; r < rank; ++r) taken |= best[r] == (int)i;
      if (!taken && (best[rank] < 0 || scores[i] > scores[best[rank]])) best[rank] = (int)i;
    }
    printf("top%d index=%d score=%.5f\n", rank + 1, best[rank], scores[best[rank]]);
  }
  free(raw);
  free(input);
  free(scores);
  hanasc_model_destroy(model);
  return 0;
}
