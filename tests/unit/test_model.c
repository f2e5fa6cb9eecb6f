/* test_model.c — model file loading (model.h). Forged and broken files are
 * written by the tests: too short, header fields out of range or
 * inconsistent (dim, heads, kv heads, odd head size, vocab), a huge seq_len
 * that only the file-size check can refuse, truncated or trailing bytes, an
 * unknown "ak42" version, a bad shared-classifier flag, bad Q8 group sizes,
 * a missing path and a directory; each must fail with the right code and a
 * message naming the file. Tiny valid v0 (separate and shared classifier),
 * v1 and v2 files written by the tests must load with every tensor at the
 * byte offset the format puts it, and config_param_count must match a count
 * by hand. The three real stories260K files must load with their known
 * configuration, format and dtype, and hold the same weights. */
#include "testutil.h"

#include <math.h>
#include <sys/stat.h>

#include "model.h"

/* ---- writing model files ---------------------------------------------------- */

/* The seven header fields in file order. */
typedef struct {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} Header;

static void put_header7(Bytes *b, const Header *h) {
    put_i32(b, h->dim);
    put_i32(b, h->hidden_dim);
    put_i32(b, h->n_layers);
    put_i32(b, h->n_heads);
    put_i32(b, h->n_kv_heads);
    put_i32(b, h->vocab_size);
    put_i32(b, h->seq_len);
}

/* The 256-byte "ak42" header: magic, version, 7 fields, shared flag (byte 36), group size (bytes 37-40). */
static void put_ak42_header(Bytes *b, int32_t version, const Header *h, unsigned char shared, int32_t group_size) {
    size_t start = b->len;
    put_i32(b, 0x616b3432);
    put_i32(b, version);
    put_header7(b, h);
    bytes_put(b, &shared, 1);
    put_i32(b, group_size);
    unsigned char zero[256] = {0};
    bytes_put(b, zero, 256 - (b->len - start));
    assert_int_equal(b->len - start, 256);
}

/* Weights counted by hand: embedding, per layer 2 norms + q + k + v + o + 3 FFN
 * matrices, the final norm, and the classifier unless shared. */
static uint64_t hand_param_count(uint64_t D, uint64_t H, uint64_t L, uint64_t heads, uint64_t kv_heads, uint64_t V,
                                 bool shared) {
    uint64_t kv_dim = D / heads * kv_heads;
    uint64_t per_layer = D + D * D + kv_dim * D + kv_dim * D + D * D + D + H * D + D * H + H * D;
    return V * D + L * per_layer + D + (shared ? 0 : V * D);
}

/* The tiny model most tests start from: dim 8, hidden 16, 2 layers, 2 heads,
 * 1 kv head (head size 4, kv_dim 4), vocab 10, seq 4. */
static const Header TINY = {8, 16, 2, 2, 1, 10, 4};

static uint64_t tiny_floats_v0(bool shared) {
    /* parameters plus freq_cis (seq_len * head_size / 2, twice) */
    return hand_param_count(8, 16, 2, 2, 1, 10, shared) + 4 * 4;
}

/* A legacy file: header (vocab negative when not shared), then n_floats floats valued 0, 1, 2, ... */
static void put_legacy(Bytes *b, const Header *h, uint64_t n_floats) {
    put_header7(b, h);
    for (uint64_t i = 0; i < n_floats; i++) put_f32(b, (float)i);
}

static char *write_bytes(Bytes *b) {
    char *path = write_temp_file(b->data, b->len);
    free(b->data);
    memset(b, 0, sizeof *b);
    return path;
}

/* Loads the bytes expecting failure with `code`; the message must name the file. */
static void assert_load_fails(Bytes *b, const char *code, const char *what) {
    char *path = write_bytes(b);
    Model m;
    NfError err = {0};
    int rc = model_load(&m, path, &err);
    unlink(path);
    if (rc != -1) {
        if (rc == 0) model_free(&m);
        free(path);
        fail_msg("%s: model_load returned %d", what, rc);
    }
    assert_non_null(err.code);
    if (strcmp(err.code, code) != 0) fail_msg("%s: code %s, expected %s (%s)", what, err.code, code, err.message);
    if (strstr(err.message, path) == NULL) fail_msg("%s: message '%s' does not name the file", what, err.message);
    free(path);
    /* the model is left empty */
    assert_null(m.weights.layers);
    assert_null(m.file.data);
}

/* ---- broken files ------------------------------------------------------------- */

static void test_empty_file(void **state) {
    (void)state;
    Bytes b = {0};
    assert_load_fails(&b, NF_ERR_MODEL, "empty file");
}

static void test_ten_byte_file(void **state) {
    (void)state;
    Bytes b = {0};
    bytes_put(&b, "0123456789", 10);
    assert_load_fails(&b, NF_ERR_MODEL, "10-byte file");
}

static void test_header_only(void **state) {
    (void)state;
    Bytes b = {0};
    put_header7(&b, &TINY);
    assert_load_fails(&b, NF_ERR_MODEL, "header without weights");
}

/* A legacy file whose header is `h` and whose size fits the tiny model. */
static void assert_legacy_header_refused(const Header *h, const char *what) {
    Bytes b = {0};
    put_legacy(&b, h, tiny_floats_v0(h->vocab_size > 0));
    assert_load_fails(&b, NF_ERR_MODEL, what);
}

static void test_dim_out_of_range(void **state) {
    (void)state;
    const int32_t bad[] = {0, 1, -8, INT32_MIN, NF_MAX_DIM + 2, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        Header h = TINY;
        h.dim = bad[i];
        assert_legacy_header_refused(&h, "dim");
    }
}

static void test_other_fields_out_of_range(void **state) {
    (void)state;
    Header h;
    h = TINY, h.hidden_dim = 0;
    assert_legacy_header_refused(&h, "hidden 0");
    h = TINY, h.hidden_dim = NF_MAX_HIDDEN + 1;
    assert_legacy_header_refused(&h, "hidden too big");
    h = TINY, h.n_layers = 0;
    assert_legacy_header_refused(&h, "layers 0");
    h = TINY, h.n_layers = -2;
    assert_legacy_header_refused(&h, "layers negative");
    h = TINY, h.n_layers = NF_MAX_LAYERS + 1;
    assert_legacy_header_refused(&h, "layers too many");
    h = TINY, h.n_heads = 0;
    assert_legacy_header_refused(&h, "heads 0");
    h = TINY, h.n_heads = 16;
    assert_legacy_header_refused(&h, "heads > dim");
    h = TINY, h.n_kv_heads = 0;
    assert_legacy_header_refused(&h, "kv heads 0");
    h = TINY, h.n_kv_heads = 4;
    assert_legacy_header_refused(&h, "kv heads > heads");
    h = TINY, h.seq_len = 0;
    assert_legacy_header_refused(&h, "seq 0");
    h = TINY, h.seq_len = NF_MAX_SEQ_LEN + 1;
    assert_legacy_header_refused(&h, "seq too long");
    h = TINY, h.vocab_size = NF_MAX_VOCAB + 1;
    assert_legacy_header_refused(&h, "vocab too big");
    h = TINY, h.vocab_size = -(NF_MAX_VOCAB + 1);
    assert_legacy_header_refused(&h, "vocab too big, unshared");
}

static void test_dim_not_multiple_of_heads(void **state) {
    (void)state;
    Header h = TINY;
    h.n_heads = 3;
    h.n_kv_heads = 3;
    assert_legacy_header_refused(&h, "dim % heads");
}

static void test_kv_heads_not_dividing_heads(void **state) {
    (void)state;
    Header h = TINY;
    h.n_heads = 4; /* head size 2 */
    h.n_kv_heads = 3;
    assert_legacy_header_refused(&h, "kv heads do not divide heads");
}

static void test_odd_head_size(void **state) {
    (void)state;
    Header h = TINY;
    h.dim = 6;
    h.n_heads = 2; /* head size 3 */
    assert_legacy_header_refused(&h, "odd head size");
}

static void test_vocab_zero(void **state) {
    (void)state;
    Header h = TINY;
    h.vocab_size = 0;
    assert_legacy_header_refused(&h, "vocab 0");
}

static void test_huge_seq_len_refused_by_size_check(void **state) {
    (void)state;
    /* in range, so only the file size (which lacks its freq_cis tables) can refuse it */
    Header h = TINY;
    h.seq_len = NF_MAX_SEQ_LEN;
    Bytes b = {0};
    put_legacy(&b, &h, tiny_floats_v0(true));
    char *path = write_bytes(&b);
    Model m;
    NfError err = {0};
    assert_int_equal(model_load(&m, path, &err), -1);
    assert_string_equal(err.code, NF_ERR_MODEL);
    assert_non_null(strstr(err.message, "truncated"));
    remove_temp_file(path);
}

static void test_truncated_by_four_bytes(void **state) {
    (void)state;
    Bytes b = {0};
    put_legacy(&b, &TINY, tiny_floats_v0(true));
    b.len -= 4;
    assert_load_fails(&b, NF_ERR_MODEL, "truncated by 4 bytes");
}

static void test_trailing_four_bytes(void **state) {
    (void)state;
    Bytes b = {0};
    put_legacy(&b, &TINY, tiny_floats_v0(true) + 1);
    char *path = write_bytes(&b);
    Model m;
    NfError err = {0};
    assert_int_equal(model_load(&m, path, &err), -1);
    assert_string_equal(err.code, NF_ERR_MODEL);
    assert_non_null(strstr(err.message, "trailing"));
    remove_temp_file(path);
}

static void test_unshared_vocab_size_needs_classifier_bytes(void **state) {
    (void)state;
    /* negative vocab (separate classifier) but the file is sized for a shared one */
    Header h = TINY;
    h.vocab_size = -10;
    Bytes b = {0};
    put_legacy(&b, &h, tiny_floats_v0(true));
    assert_load_fails(&b, NF_ERR_MODEL, "classifier missing");
}

static void test_ak42_version_3(void **state) {
    (void)state;
    Bytes b = {0};
    put_ak42_header(&b, 3, &TINY, 1, 0);
    for (uint64_t i = 0; i < hand_param_count(8, 16, 2, 2, 1, 10, true); i++) put_f32(&b, 0.0f);
    assert_load_fails(&b, NF_ERR_MODEL, "version 3");
    put_ak42_header(&b, 0, &TINY, 1, 0);
    assert_load_fails(&b, NF_ERR_MODEL, "version 0");
}

static void test_ak42_truncated_header(void **state) {
    (void)state;
    Bytes b = {0};
    put_ak42_header(&b, 1, &TINY, 1, 0);
    b.len = 100;
    assert_load_fails(&b, NF_ERR_MODEL, "ak42 header cut at 100 bytes");
}

static void test_v1_shared_flag_2(void **state) {
    (void)state;
    Bytes b = {0};
    put_ak42_header(&b, 1, &TINY, 2, 0);
    for (uint64_t i = 0; i < hand_param_count(8, 16, 2, 2, 1, 10, true); i++) put_f32(&b, 0.0f);
    assert_load_fails(&b, NF_ERR_MODEL, "shared flag 2");
}

static void test_v1_bad_header_field(void **state) {
    (void)state;
    Header h = TINY;
    h.n_kv_heads = 3;
    Bytes b = {0};
    put_ak42_header(&b, 1, &h, 1, 0);
    for (uint64_t i = 0; i < hand_param_count(8, 16, 2, 2, 1, 10, true); i++) put_f32(&b, 0.0f);
    assert_load_fails(&b, NF_ERR_MODEL, "v1 kv heads 3");
}

static void test_v1_wrong_size(void **state) {
    (void)state;
    Bytes b = {0};
    put_ak42_header(&b, 1, &TINY, 1, 0);
    for (uint64_t i = 0; i + 1 < hand_param_count(8, 16, 2, 2, 1, 10, true); i++) put_f32(&b, 0.0f);
    assert_load_fails(&b, NF_ERR_MODEL, "v1 one float short");
}

static void test_v2_bad_group_size(void **state) {
    (void)state;
    const int32_t bad[] = {0, -4, 3, 5, 16, 4097, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        Bytes b = {0};
        put_ak42_header(&b, 2, &TINY, 1, bad[i]);
        bytes_put(&b, "\0\0\0\0\0\0\0\0", 8);
        char what[64];
        snprintf(what, sizeof what, "v2 group size %d", bad[i]);
        assert_load_fails(&b, NF_ERR_MODEL, what);
    }
}

static void test_v2_wrong_size(void **state) {
    (void)state;
    Bytes b = {0};
    put_ak42_header(&b, 2, &TINY, 1, 4);
    unsigned char zero[64] = {0};
    bytes_put(&b, zero, sizeof zero);
    assert_load_fails(&b, NF_ERR_MODEL, "v2 short");
}

static void test_missing_path_is_io_error(void **state) {
    (void)state;
    Model m;
    NfError err = {0};
    assert_int_equal(model_load(&m, "/nonexistent/dir/model.bin", &err), -1);
    assert_string_equal(err.code, NF_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/dir/model.bin"));
}

static void test_directory_is_io_error(void **state) {
    (void)state;
    char dir[512];
    temp_template(dir, sizeof dir, "nf_test_dir");
    assert_non_null(mkdtemp(dir));
    Model m;
    NfError err = {0};
    int rc = model_load(&m, dir, &err);
    rmdir(dir);
    assert_int_equal(rc, -1);
    assert_string_equal(err.code, NF_ERR_IO);
    assert_non_null(strstr(err.message, dir));
}

static void test_null_err_is_allowed(void **state) {
    (void)state;
    Bytes b = {0};
    bytes_put(&b, "0123456789", 10);
    char *path = write_bytes(&b);
    Model m;
    assert_int_equal(model_load(&m, path, NULL), -1);
    remove_temp_file(path);
}

/* ---- valid tiny files ------------------------------------------------------------ */

static void test_param_count_formula(void **state) {
    (void)state;
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 16,
                     .n_layers = 2,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 10,
                     .seq_len = 4,
                     .shared_classifier = false};
    assert_int_equal(config_param_count(&c), 1352);
    assert_int_equal(config_param_count(&c), hand_param_count(8, 16, 2, 2, 1, 10, false));
    c.shared_classifier = true;
    assert_int_equal(config_param_count(&c), 1352 - 80);
    ModelConfig s = {.dim = 64,
                     .hidden_dim = 172,
                     .n_layers = 5,
                     .n_heads = 8,
                     .n_kv_heads = 4,
                     .vocab_size = 512,
                     .seq_len = 512,
                     .shared_classifier = true};
    assert_int_equal(config_param_count(&s), hand_param_count(64, 172, 5, 8, 4, 512, true));
    assert_int_equal(config_param_count(&s), 260032);
    /* the largest header config_validate accepts does not overflow 64 bits */
    ModelConfig big = {.dim = NF_MAX_DIM,
                       .hidden_dim = NF_MAX_HIDDEN,
                       .n_layers = NF_MAX_LAYERS,
                       .n_heads = 1,
                       .n_kv_heads = 1,
                       .vocab_size = NF_MAX_VOCAB,
                       .seq_len = NF_MAX_SEQ_LEN,
                       .shared_classifier = false};
    assert_int_equal(config_validate(&big, NULL), 0);
    assert_int_equal(config_param_count(&big),
                     hand_param_count(NF_MAX_DIM, NF_MAX_HIDDEN, NF_MAX_LAYERS, 1, 1, NF_MAX_VOCAB, false));
}

/* Qwen 3's shape: head_dim apart from dim / heads, q/k norms; Qwen 2's: biases */
static void test_param_count_of_qwen_shapes(void **state) {
    (void)state;
    ModelConfig q3 = {.dim = 16,
                      .hidden_dim = 24,
                      .n_layers = 2,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .vocab_size = 10,
                      .seq_len = 8,
                      .shared_classifier = true,
                      .head_dim = 8,
                      .arch = ARCH_QWEN3,
                      .qk_norm = true};
    assert_int_equal(config_validate(&q3, NULL), 0);
    assert_int_equal(config_q_dim(&q3), 32);
    /* embedding 160; per layer: norms 32, wq 512, wk wv 2*256, wo 512, ffn 3*384, q/k norms 16; final 16 */
    assert_int_equal(config_param_count(&q3), 160 + 2 * (32 + 512 + 512 + 512 + 1152 + 16) + 16);
    ModelConfig q2 = q3;
    q2.arch = ARCH_QWEN2, q2.qk_norm = false, q2.qkv_bias = true, q2.head_dim = 0;
    /* head 4: wq 256, wk wv 2*128, wo 256; biases 16 + 2*8 */
    assert_int_equal(config_param_count(&q2), 160 + 2 * (32 + 256 + 256 + 256 + 1152 + 32) + 16);
    char why[64];
    assert_string_equal(config_beyond_llama2c(&q2, why, sizeof why), "the qwen2 architecture");
    assert_null(config_beyond_llama2c(&(ModelConfig){.dim = 8, .n_heads = 2}, why, sizeof why));
    q2.head_dim = 3; /* odd: RoPE needs pairs */
    assert_int_equal(config_validate(&q2, NULL), -1);
}

static void test_config_validate_accepts_tiny(void **state) {
    (void)state;
    ModelConfig c = {.dim = 8,
                     .hidden_dim = 16,
                     .n_layers = 2,
                     .n_heads = 2,
                     .n_kv_heads = 1,
                     .vocab_size = 10,
                     .seq_len = 4,
                     .shared_classifier = false};
    NfError err = {0};
    assert_int_equal(config_validate(&c, &err), 0);
    assert_int_equal(config_head_size(&c), 4);
    assert_int_equal(config_kv_dim(&c), 4);
}

static void test_tiny_legacy_unshared_loads_with_right_layout(void **state) {
    (void)state;
    Header h = TINY;
    h.vocab_size = -10; /* separate classifier */
    uint64_t n = tiny_floats_v0(false);
    assert_int_equal(n, 1352 + 16);
    Bytes b = {0};
    put_legacy(&b, &h, n);
    assert_int_equal(b.len, 28 + 4 * n);
    char *path = write_bytes(&b);
    Model m;
    NfError err = {0};
    if (model_load(&m, path, &err) != 0) fail_msg("%s", err.message);
    remove_temp_file(path);
    const ModelConfig *c = &m.config;
    assert_int_equal(c->dim, 8);
    assert_int_equal(c->hidden_dim, 16);
    assert_int_equal(c->n_layers, 2);
    assert_int_equal(c->n_heads, 2);
    assert_int_equal(c->n_kv_heads, 1);
    assert_int_equal(c->vocab_size, 10);
    assert_int_equal(c->seq_len, 4);
    assert_false(c->shared_classifier);
    assert_int_equal(config_param_count(c), 1352);
    assert_int_equal(m.format, MODEL_LLAMA2C_V0);
    assert_int_equal(m.dtype, NF_F32);
    assert_string_equal(model_format_name(m.format), "llama2c-v0");

    /* each float holds its index: check where every tensor starts */
    const ModelWeights *w = &m.weights;
    assert_true(w->token_embedding.dtype == NF_F32);
    assert_true(w->token_embedding.f32[0] == 0.0f);
    assert_true(w->layers[0].rms_att[0] == 80.0f);
    assert_true(w->layers[1].rms_att[0] == 88.0f);
    assert_true(w->layers[0].wq.f32[0] == 96.0f);
    assert_true(w->layers[1].wq.f32[0] == 160.0f);
    assert_true(w->layers[0].wk.f32[0] == 224.0f);
    assert_true(w->layers[1].wk.f32[0] == 256.0f);
    assert_true(w->layers[0].wv.f32[0] == 288.0f);
    assert_true(w->layers[1].wv.f32[0] == 320.0f);
    assert_true(w->layers[0].wo.f32[0] == 352.0f);
    assert_true(w->layers[1].wo.f32[0] == 416.0f);
    assert_true(w->layers[0].rms_ffn[0] == 480.0f);
    assert_true(w->layers[1].rms_ffn[0] == 488.0f);
    assert_true(w->layers[0].w1.f32[0] == 496.0f);
    assert_true(w->layers[1].w1.f32[0] == 624.0f);
    assert_true(w->layers[0].w2.f32[0] == 752.0f);
    assert_true(w->layers[1].w2.f32[0] == 880.0f);
    assert_true(w->layers[0].w3.f32[0] == 1008.0f);
    assert_true(w->layers[1].w3.f32[0] == 1136.0f);
    assert_true(w->rms_final[0] == 1264.0f);
    /* freq_cis at 1272..1287 is skipped; the classifier follows */
    assert_true(w->wcls.f32 != w->token_embedding.f32);
    assert_true(w->wcls.f32[0] == 1288.0f);
    assert_true(w->wcls.f32[79] == 1367.0f);

    float row[8];
    tensor_row_f32(&w->token_embedding, 3, 8, row);
    for (int i = 0; i < 8; i++) assert_true(row[i] == (float)(24 + i));
    model_free(&m);
    assert_null(m.weights.layers);
}

static void test_tiny_legacy_shared_loads(void **state) {
    (void)state;
    Bytes b = {0};
    put_legacy(&b, &TINY, tiny_floats_v0(true));
    char *path = write_bytes(&b);
    Model m;
    NfError err = {0};
    if (model_load(&m, path, &err) != 0) fail_msg("%s", err.message);
    remove_temp_file(path);
    assert_true(m.config.shared_classifier);
    assert_int_equal(m.config.vocab_size, 10);
    assert_int_equal(config_param_count(&m.config), 1352 - 80);
    assert_ptr_equal(m.weights.wcls.f32, m.weights.token_embedding.f32);
    assert_true(m.weights.rms_final[0] == 1264.0f);
    model_free(&m);
}

static void test_tiny_v1_loads_with_norms_first(void **state) {
    (void)state;
    uint64_t n = hand_param_count(8, 16, 2, 2, 1, 10, false);
    Bytes b = {0};
    put_ak42_header(&b, 1, &TINY, 0, 0);
    for (uint64_t i = 0; i < n; i++) put_f32(&b, (float)i);
    char *path = write_bytes(&b);
    Model m;
    NfError err = {0};
    if (model_load(&m, path, &err) != 0) fail_msg("%s", err.message);
    remove_temp_file(path);
    assert_int_equal(m.format, MODEL_LLAMA2C_V1);
    assert_int_equal(m.dtype, NF_F32);
    assert_false(m.config.shared_classifier);
    assert_int_equal(m.config.vocab_size, 10);
    const ModelWeights *w = &m.weights;
    /* norms: rms_att x2, rms_ffn x2, rms_final; then embedding, wq, wk, wv, wo, w1, w2, w3, classifier */
    assert_true(w->layers[0].rms_att[0] == 0.0f);
    assert_true(w->layers[1].rms_att[0] == 8.0f);
    assert_true(w->layers[0].rms_ffn[0] == 16.0f);
    assert_true(w->layers[1].rms_ffn[0] == 24.0f);
    assert_true(w->rms_final[0] == 32.0f);
    assert_true(w->token_embedding.f32[0] == 40.0f);
    assert_true(w->layers[0].wq.f32[0] == 120.0f);
    assert_true(w->layers[1].wq.f32[0] == 184.0f);
    assert_true(w->layers[0].wk.f32[0] == 248.0f);
    assert_true(w->layers[0].wv.f32[0] == 312.0f);
    assert_true(w->layers[0].wo.f32[0] == 376.0f);
    assert_true(w->layers[0].w1.f32[0] == 504.0f);
    assert_true(w->layers[0].w2.f32[0] == 760.0f);
    assert_true(w->layers[0].w3.f32[0] == 1016.0f);
    assert_true(w->layers[1].w3.f32[0] == 1144.0f);
    assert_true(w->wcls.f32[0] == 1272.0f);
    assert_true(w->wcls.f32[79] == 1351.0f);
    model_free(&m);
}

/* Writes a v2 file for header h (shared classifier): norms valued by index, then
 * each matrix as int8 values ((i % 11) - 5) followed by its scales (0.5 + 0.25 * group). */
static void put_v2(Bytes *b, const Header *h, int32_t group_size) {
    put_ak42_header(b, 2, h, 1, group_size);
    const uint64_t D = (uint64_t)h->dim, H = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
    const uint64_t KV = D / (uint64_t)h->n_heads * (uint64_t)h->n_kv_heads, V = (uint64_t)h->vocab_size;
    for (uint64_t i = 0; i < 2 * L * D + D; i++) put_f32(b, (float)i);
    const uint64_t per_layer[7] = {D * D, KV * D, KV * D, D * D, H * D, D * H, H * D};
    for (int k = -1; k < 7; k++)
        for (uint64_t l = 0; l < (k < 0 ? 1 : L); l++) {
            uint64_t size = k < 0 ? V * D : per_layer[k];
            for (uint64_t i = 0; i < size; i++) {
                int8_t q = (int8_t)((int)(i % 11) - 5);
                bytes_put(b, &q, 1);
            }
            for (uint64_t g = 0; g < size / (uint64_t)group_size; g++) put_f32(b, 0.5f + 0.25f * (float)g);
        }
}

static void assert_q8_tensor(const Tensor *t, int rows, int cols, int group_size, const char *what) {
    assert_int_equal(t->dtype, NF_Q8);
    assert_int_equal(t->group_size, group_size);
    /* the scales are read as floats, so they must be float-aligned */
    assert_int_equal(((uintptr_t)t->scale) % sizeof(float), 0);
    float row[64];
    assert_true(cols <= 64);
    for (int r = 0; r < rows; r++) {
        tensor_row_f32(t, (size_t)r, cols, row);
        for (int i = 0; i < cols; i++) {
            int flat = r * cols + i;
            float expected = (float)(flat % 11 - 5) * (0.5f + 0.25f * (float)(flat / group_size));
            if (row[i] != expected) fail_msg("gs %d %s [%d][%d]: %g != %g", group_size, what, r, i, row[i], expected);
        }
    }
}

static void assert_v2_loads(const Header *h, int32_t group_size) {
    Bytes b = {0};
    put_v2(&b, h, group_size);
    char *path = write_bytes(&b);
    Model m;
    NfError err = {0};
    if (model_load(&m, path, &err) != 0) fail_msg("group size %d: %s", group_size, err.message);
    remove_temp_file(path);
    assert_int_equal(m.format, MODEL_LLAMA2C_V2);
    assert_int_equal(m.dtype, NF_Q8);
    assert_int_equal(m.group_size, group_size);
    assert_true(m.config.shared_classifier);
    assert_string_equal(model_format_name(m.format), "llama2c-v2-q8_0");
    const ModelWeights *w = &m.weights;
    const int D = h->dim, H = h->hidden_dim, L = h->n_layers, V = h->vocab_size;
    const int KV = D / h->n_heads * h->n_kv_heads;
    assert_true(w->layers[L - 1].rms_att[0] == (float)((L - 1) * D));
    assert_true(w->layers[0].rms_ffn[0] == (float)(L * D));
    assert_true(w->rms_final[0] == (float)(2 * L * D));
    assert_ptr_equal(w->wcls.q, w->token_embedding.q);
    /* every matrix dequantizes to (i % 11 - 5) * (0.5 + 0.25 * (i / group_size)) */
    assert_q8_tensor(&w->token_embedding, V, D, group_size, "embedding");
    for (int l = 0; l < L; l++) {
        const LayerWeights *lw = &w->layers[l];
        assert_q8_tensor(&lw->wq, D, D, group_size, "wq");
        assert_q8_tensor(&lw->wk, KV, D, group_size, "wk");
        assert_q8_tensor(&lw->wv, KV, D, group_size, "wv");
        assert_q8_tensor(&lw->wo, D, D, group_size, "wo");
        assert_q8_tensor(&lw->w1, H, D, group_size, "w1");
        assert_q8_tensor(&lw->w2, D, H, group_size, "w2");
        assert_q8_tensor(&lw->w3, H, D, group_size, "w3");
    }
    model_free(&m);
}

static void test_tiny_v2_loads(void **state) {
    (void)state;
    assert_v2_loads(&TINY, 4);
    assert_v2_loads(&TINY, 8);
    /* group sizes that are not a multiple of 4 take the copied-scales path */
    assert_v2_loads(&TINY, 2);
    assert_v2_loads(&TINY, 1);
}

static void test_v2_scales_at_unaligned_offsets(void **state) {
    (void)state;
    /* dim 6, vocab 5: the 30 int8 embedding values leave its scales at file
     * offset 256 + 72 + 30 = 358, not a multiple of 4 */
    const Header odd = {6, 3, 1, 1, 1, 5, 2};
    assert_v2_loads(&odd, 3);
    assert_v2_loads(&odd, 2);
    assert_v2_loads(&odd, 6);
}

/* ---- the real stories260K files ------------------------------------------------------ */

static void assert_stories260k_config(const Model *m) {
    const ModelConfig *c = &m->config;
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->hidden_dim, 172);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->seq_len, 512);
    assert_true(c->shared_classifier);
    assert_int_equal(config_head_size(c), 8);
    assert_int_equal(config_kv_dim(c), 32);
    /* 512*64 + 5*(64 + 64*64 + 2*32*64 + 64*64 + 64 + 3*172*64) + 64 = 260032 */
    assert_int_equal(config_param_count(c), hand_param_count(64, 172, 5, 8, 4, 512, true));
    assert_int_equal(config_param_count(c), 260032);
}

static void test_stories260k_v0(void **state) {
    (void)state;
    Model m;
    if (!load_shared_model(&m, "stories260K.bin")) {
        skip();
        return;
    }
    assert_stories260k_config(&m);
    assert_int_equal(m.format, MODEL_LLAMA2C_V0);
    assert_int_equal(m.dtype, NF_F32);
    /* the file is the 28-byte header, the parameters and freq_cis (512 * 8 floats) */
    assert_int_equal(m.file.size, 28 + 4 * (260032 + 512 * 8));
    model_free(&m);
}

static void test_stories260k_v1(void **state) {
    (void)state;
    Model m;
    if (!load_shared_model(&m, "stories260K_v1.bin")) {
        skip();
        return;
    }
    assert_stories260k_config(&m);
    assert_int_equal(m.format, MODEL_LLAMA2C_V1);
    assert_int_equal(m.dtype, NF_F32);
    assert_int_equal(m.file.size, 256 + 4 * 260032);
    model_free(&m);
}

static void test_stories260k_q80(void **state) {
    (void)state;
    Model m;
    if (!load_shared_model(&m, "stories260K_q80.bin")) {
        skip();
        return;
    }
    assert_stories260k_config(&m);
    assert_int_equal(m.format, MODEL_LLAMA2C_V2);
    assert_int_equal(m.dtype, NF_Q8);
    assert_int_equal(m.group_size, 32);
    uint64_t norms = 2 * 5 * 64 + 64, quantized = 260032 - norms;
    assert_int_equal(m.file.size, 256 + 4 * norms + quantized + 4 * (quantized / 32));
    model_free(&m);
}

static void assert_same_tensor(const Tensor *a, const Tensor *b, int rows, int cols, float tol) {
    float ra[256], rb[256];
    assert_true(cols <= 256);
    for (int r = 0; r < rows; r++) {
        tensor_row_f32(a, (size_t)r, cols, ra);
        tensor_row_f32(b, (size_t)r, cols, rb);
        for (int i = 0; i < cols; i++)
            if (!(fabsf(ra[i] - rb[i]) <= tol)) fail_msg("row %d col %d: %g vs %g", r, i, ra[i], rb[i]);
    }
}

static void test_stories260k_formats_hold_same_weights(void **state) {
    (void)state;
    Model v0, v1, q8;
    if (!load_shared_model(&v0, "stories260K.bin")) {
        skip();
        return;
    }
    if (!load_shared_model(&v1, "stories260K_v1.bin")) {
        model_free(&v0);
        skip();
        return;
    }
    if (!load_shared_model(&q8, "stories260K_q80.bin")) {
        model_free(&v0);
        model_free(&v1);
        skip();
        return;
    }
    assert_memory_equal(v0.weights.rms_final, v1.weights.rms_final, 64 * sizeof(float));
    assert_memory_equal(v0.weights.rms_final, q8.weights.rms_final, 64 * sizeof(float));
    for (int l = 0; l < 5; l++) {
        const LayerWeights *a = &v0.weights.layers[l], *b = &v1.weights.layers[l], *q = &q8.weights.layers[l];
        assert_memory_equal(a->rms_att, b->rms_att, 64 * sizeof(float));
        assert_memory_equal(a->rms_ffn, q->rms_ffn, 64 * sizeof(float));
        assert_same_tensor(&a->wq, &b->wq, 64, 64, 0.0f);
        assert_same_tensor(&a->wk, &b->wk, 32, 64, 0.0f);
        assert_same_tensor(&a->w2, &b->w2, 64, 172, 0.0f);
        assert_same_tensor(&a->w3, &b->w3, 172, 64, 0.0f);
        /* Q8_0 with 32-element groups: error at most half a step of 1/127 of the group max */
        assert_same_tensor(&a->wv, &q->wv, 32, 64, 0.02f);
        assert_same_tensor(&a->w2, &q->w2, 64, 172, 0.02f);
    }
    assert_same_tensor(&v0.weights.token_embedding, &v1.weights.token_embedding, 512, 64, 0.0f);
    assert_same_tensor(&v0.weights.token_embedding, &q8.weights.token_embedding, 512, 64, 0.02f);
    model_free(&v0);
    model_free(&v1);
    model_free(&q8);
}

/* ---- last: inputs that make the loader compute -INT32_MIN -------------------------- */

/* --quant q8's groups tile every matrix's rows where a group of 64, 32 or 16 can: llama2.c's 110M and the
 * 0.5-1B shapes take 64, stories15M's width 288 takes 32, a q_dim wider than dim counts too, and
 * stories260K's hidden 172 (no multiple of 16) keeps 64, its groups running across rows. */
static void test_q8_group_size_tiles_the_rows(void **state) {
    (void)state;
    ModelConfig c = {.dim = 768, .hidden_dim = 2048, .n_layers = 12, .n_heads = 12, .n_kv_heads = 12};
    assert_int_equal(model_q8_group_size(&c), 64);
    c = (ModelConfig){.dim = 288, .hidden_dim = 768, .n_layers = 6, .n_heads = 6, .n_kv_heads = 6};
    assert_int_equal(model_q8_group_size(&c), 32);
    c = (ModelConfig){.dim = 64, .hidden_dim = 172, .n_layers = 5, .n_heads = 8, .n_kv_heads = 4};
    assert_int_equal(model_q8_group_size(&c), 64);
    c = (ModelConfig){.dim = 896, .hidden_dim = 4864, .n_layers = 24, .n_heads = 14, .n_kv_heads = 2};
    assert_int_equal(model_q8_group_size(&c), 64);
    c = (ModelConfig){.dim = 64, .hidden_dim = 128, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2, .head_dim = 40};
    assert_int_equal(model_q8_group_size(&c), 16); /* q_dim 80 */
}

/* A legacy header with vocab_size INT32_MIN: negating it to get the classifier's
 * vocabulary overflows int (undefined behaviour, reported by UBSan). It must be
 * refused like any other out-of-range vocab. Kept last because a sanitizer
 * abort ends the run. */
static void test_vocab_int32_min_refused(void **state) {
    (void)state;
    Header h = TINY;
    h.vocab_size = INT32_MIN;
    Bytes b = {0};
    put_legacy(&b, &h, tiny_floats_v0(false));
    assert_load_fails(&b, NF_ERR_MODEL, "vocab INT32_MIN");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_ten_byte_file),
        cmocka_unit_test(test_header_only),
        cmocka_unit_test(test_dim_out_of_range),
        cmocka_unit_test(test_other_fields_out_of_range),
        cmocka_unit_test(test_dim_not_multiple_of_heads),
        cmocka_unit_test(test_kv_heads_not_dividing_heads),
        cmocka_unit_test(test_odd_head_size),
        cmocka_unit_test(test_vocab_zero),
        cmocka_unit_test(test_huge_seq_len_refused_by_size_check),
        cmocka_unit_test(test_truncated_by_four_bytes),
        cmocka_unit_test(test_trailing_four_bytes),
        cmocka_unit_test(test_unshared_vocab_size_needs_classifier_bytes),
        cmocka_unit_test(test_ak42_version_3),
        cmocka_unit_test(test_ak42_truncated_header),
        cmocka_unit_test(test_v1_shared_flag_2),
        cmocka_unit_test(test_v1_bad_header_field),
        cmocka_unit_test(test_v1_wrong_size),
        cmocka_unit_test(test_v2_bad_group_size),
        cmocka_unit_test(test_v2_wrong_size),
        cmocka_unit_test(test_missing_path_is_io_error),
        cmocka_unit_test(test_directory_is_io_error),
        cmocka_unit_test(test_null_err_is_allowed),
        cmocka_unit_test(test_param_count_formula),
        cmocka_unit_test(test_config_validate_accepts_tiny),
        cmocka_unit_test(test_param_count_of_qwen_shapes),
        cmocka_unit_test(test_tiny_legacy_unshared_loads_with_right_layout),
        cmocka_unit_test(test_tiny_legacy_shared_loads),
        cmocka_unit_test(test_tiny_v1_loads_with_norms_first),
        cmocka_unit_test(test_tiny_v2_loads),
        cmocka_unit_test(test_v2_scales_at_unaligned_offsets),
        cmocka_unit_test(test_stories260k_v0),
        cmocka_unit_test(test_stories260k_v1),
        cmocka_unit_test(test_stories260k_q80),
        cmocka_unit_test(test_stories260k_formats_hold_same_weights),
        cmocka_unit_test(test_q8_group_size_tiles_the_rows),
        cmocka_unit_test(test_vocab_int32_min_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
