/* hanasc block counter: a qemu-user TCG plugin (plugin API version 1, qemu 7.x) that counts how many
 * times each translation block executes (an inline add in the translated code: no callback, no trace text)
 * and, at exit, writes one line per translated block (guest address, host address of its code, executions,
 * instruction bytes) and the memory mappings the blocks' code lay in (read from /proc/self/maps when
 * the block was translated: a library may be unmapped before exit), so blocks can be attributed to files.  Built by hanasc (cost_models/simulation/qemu_blocks.py) with the host C compiler.
 *
 * Only the handful of plugin entry points used here are declared; they are the stable C ABI that qemu 7.x
 * exports to plugins (see qemu's docs/devel/tcg-plugins.rst).  Usage:
 *     qemu-aarch64 -plugin ./block_counter.so,out=/path/blocks.txt PROGRAM ...
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
enum { INLINE_ADD_U64 = 0 };

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, int op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
extern size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
extern void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

typedef struct Block {
  uint64_t count; /* first: the inline add's target */
  uint64_t vaddr;
  uint64_t haddr;
  size_t n_insns;
  size_t n_bytes;
  unsigned char *bytes;  /* the instructions, back to back */
  unsigned char *sizes;  /* each instruction's length */
} Block;

enum { CHUNK = 4096 };
static Block **chunks;
static size_t n_blocks, n_chunks;
static char out_path[4096];

typedef struct Region {
  uint64_t start, end;
  char line[1024];
} Region;
static Region *regions;
static size_t n_regions;

/* Remember the mapping holding ``haddr`` (read /proc/self/maps only when no known one does). */
static void note_region(uint64_t haddr) {
  for (size_t i = 0; i < n_regions; i++) {
    if (haddr >= regions[i].start && haddr < regions[i].end) return;
  }
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[1024];
  while (maps && fgets(line, sizeof line, maps)) {
    unsigned long long start, end;
    if (sscanf(line, "%llx-%llx", &start, &end) != 2 || haddr < start || haddr >= end) continue;
    regions = realloc(regions, (n_regions + 1) * sizeof(Region));
    if (!regions) abort();
    regions[n_regions].start = start;
    regions[n_regions].end = end;
    snprintf(regions[n_regions].line, sizeof regions[n_regions].line, "%s", line);
    n_regions++;
    break;
  }
  if (maps) fclose(maps);
}

static Block *new_block(void) {
  if (n_blocks == n_chunks * CHUNK) { /* blocks never move: their counters are baked into the code */
    chunks = realloc(chunks, (n_chunks + 1) * sizeof(Block *));
    chunks[n_chunks++] = calloc(CHUNK, sizeof(Block));
    if (!chunks || !chunks[n_chunks - 1]) abort();
  }
  Block *b = &chunks[n_blocks / CHUNK][n_blocks % CHUNK];
  n_blocks++;
  return b;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  size_t n = qemu_plugin_tb_n_insns(tb);
  Block *b = new_block();
  b->vaddr = qemu_plugin_tb_vaddr(tb);
  b->n_insns = n;
  b->sizes = malloc(n ? n : 1);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += qemu_plugin_insn_size(qemu_plugin_tb_get_insn(tb, i));
  b->bytes = malloc(total ? total : 1);
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    size_t size = qemu_plugin_insn_size(insn);
    if (i == 0) b->haddr = (uint64_t)(uintptr_t)qemu_plugin_insn_haddr(insn);
    memcpy(b->bytes + at, qemu_plugin_insn_data(insn), size);
    b->sizes[i] = (unsigned char)size;
    at += size;
  }
  b->n_bytes = total;
  if (n) note_region(b->haddr);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, &b->count, 1);
}

static void write_counts(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  FILE *out = fopen(out_path, "w");
  if (!out) return;
  for (size_t k = 0; k < n_blocks; k++) {
    Block *b = &chunks[k / CHUNK][k % CHUNK];
    if (!b->count) continue;
    fprintf(out, "B %llx %llx %llu ", (unsigned long long)b->vaddr, (unsigned long long)b->haddr,
            (unsigned long long)b->count);
    size_t at = 0;
    for (size_t i = 0; i < b->n_insns; i++) {
      if (i) fputc(',', out);
      for (size_t j = 0; j < b->sizes[i]; j++) fprintf(out, "%02x", b->bytes[at + j]);
      at += b->sizes[i];
    }
    fputc('\n', out);
  }
  for (size_t i = 0; i < n_regions; i++) fprintf(out, "M %s", regions[i].line);
  fputs("END\n", out);
  fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info,
                                                               int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
  }
  if (!out_path[0]) {
    fprintf(stderr, "block_counter: give out=FILE\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, write_counts, NULL);
  return 0;
}
