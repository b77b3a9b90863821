/*
 * cowcheck._fastlayer: the two hot loops of reading a large uncompressed
 * layer, in C.  Nothing here decides what a layer means; the model
 * (cowspec.layer_tar) does, and the tests hold this module to it.
 *
 *   sha256_many(buffers, portable=False, long_count=0, long_lanes=8,
 *               digests=None, done=None, threads=1) -> list[bytes] | None
 *       The SHA-256 of each buffer.  With AVX-512 the buffers are hashed
 *       sixteen at a time, one per 32-bit lane ("multi-buffer"), which on
 *       a core without SHA instructions is several times faster than one
 *       stream at a time.  The GIL is released while hashing.  The first
 *       long_count buffers (whole layers, say) form a queue of their own
 *       that holds at most long_lanes lanes while other buffers wait, so
 *       that the short ones (files) finish in order as the long ones go.
 *       With digests (a bytearray of 32 bytes per buffer) and done (one
 *       byte per buffer), each digest is written there and its done byte
 *       set to 1 as soon as it is known, for a reader on another thread.
 *       With threads > 1, that many native threads share the work.  With
 *       release, the buffers must be read-only file mappings: the pages of
 *       each are let go (madvise MADV_DONTNEED) once hashed, so that the
 *       process does not hold a whole image in memory.
 *
 *   scan(buffer) -> list[tuple] | int
 *       The tar headers of an uncompressed archive, front to back, up to the
 *       end-of-archive block, in the shape of the model's records
 *       (cowspec.layer_tar.Record) but for the last item: (position, flag,
 *       size, name, link, mode, uid, gid, mtime, devmajor, devminor,
 *       data_offset), name and link as raw bytes (the ustar prefix joined as
 *       the model joins it).  Returns instead the byte position of the first
 *       header it will not vouch for (truncation, a wrong checksum, any
 *       number that is not plain octal digits); the caller then reads the
 *       archive with the model's own reader, which decides.  With release
 *       (for a read-only file mapping only), the pages are let go after.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#define MAX_THREADS 64

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t IV256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

/* -- one job: a buffer and where its digest goes ------------------------- */

typedef struct {
    const uint8_t *data;
    Py_ssize_t length;
    uint8_t *digest; /* 32 bytes */
} Job;

/* The blocks of a job: its whole 64-byte blocks in place, then one or two
 * padding blocks built in `tail` (the last bytes, 0x80, zeros, the length
 * in bits, big-endian). */
typedef struct {
    const Job *job;
    Py_ssize_t offset;  /* next whole block in the data */
    Py_ssize_t released; /* bytes of the data whose pages were let go */
    int tail_blocks;    /* 1 or 2 */
    int tail_next;      /* padding blocks already handed out */
    uint8_t tail[128];
} Cursor;

static void cursor_start(Cursor *cursor, const Job *job) {
    Py_ssize_t whole = job->length & ~(Py_ssize_t)63;
    Py_ssize_t rest = job->length - whole;
    uint64_t bits = (uint64_t)job->length * 8;
    cursor->job = job;
    cursor->offset = 0;
    cursor->released = 0;
    cursor->tail_next = 0;
    cursor->tail_blocks = rest + 9 <= 64 ? 1 : 2;
    memset(cursor->tail, 0, sizeof cursor->tail);
    if (rest) {
        memcpy(cursor->tail, job->data + whole, (size_t)rest);
    }
    cursor->tail[rest] = 0x80;
    for (int i = 0; i < 8; i++) {
        cursor->tail[cursor->tail_blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    }
}

/* The next block of the job, or NULL once all were handed out. */
static const uint8_t *cursor_next(Cursor *cursor) {
    if (cursor->offset + 64 <= cursor->job->length) {
        const uint8_t *block = cursor->job->data + cursor->offset;
        cursor->offset += 64;
        return block;
    }
    if (cursor->tail_next < cursor->tail_blocks) {
        return cursor->tail + 64 * cursor->tail_next++;
    }
    return NULL;
}

static int cursor_last(const Cursor *cursor) {
    return cursor->offset + 64 > cursor->job->length && cursor->tail_next == cursor->tail_blocks;
}

/* Let go of the whole pages of [start, start + length) in a file mapping:
 * they stay in the page cache, but stop counting in this process's memory
 * (the mapping reads them again if touched).  Only for read-only file
 * mappings: on ordinary memory this would throw the bytes away. */
static void release_pages(const uint8_t *start, Py_ssize_t length) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)start + page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)start + (uintptr_t)length) & ~(page - 1);
    if (to > from) {
        madvise((void *)from, to - from, MADV_DONTNEED);
    }
}

#define RELEASE_STEP (4 << 20)

/* Let go of what a long job has hashed, a few megabytes at a time. */
static void cursor_release(Cursor *cursor) {
    if (cursor->offset - cursor->released >= RELEASE_STEP) {
        release_pages(cursor->job->data + cursor->released, cursor->offset - cursor->released);
        cursor->released = cursor->offset;
    }
}

static void put_digest(uint8_t *out, const uint32_t state[8]) {
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(state[i] >> 8);
        out[4 * i + 3] = (uint8_t)state[i];
    }
}

/* -- the queue of jobs, shared by every worker thread ---------------------- */

/* Jobs [0, long_count) form the long queue (whole layers), the rest the
 * short queue (files).  A worker takes a long job while fewer than
 * long_lanes of its own lanes hold one, or when no short job is left; else
 * the next short job, in order.  Short jobs are thus done roughly in order
 * while the long ones go along beside them. */
typedef struct {
    const Job *jobs;
    Py_ssize_t next_long, long_count, next_short, count;
    volatile uint8_t *done;
    int release; /* the buffers are file mappings: let go of pages once hashed */
    pthread_mutex_t lock;
    /* For release: which short jobs are finished, the first one that is
     * not, and the span of bytes behind it not yet let go. */
    uint8_t *finished;
    Py_ssize_t low;
    const uint8_t *span;
    Py_ssize_t span_length;
} Queue;

#define SPAN_GAP (64 << 10)

/* Short jobs finish nearly in order, and their buffers lie nearly in order
 * in a mapping, headers between them: let go of what lies behind the first
 * unfinished one, a few megabytes at a time.  Called with the lock held. */
static void release_behind(Queue *queue, Py_ssize_t job, int flush) {
    if (job >= 0) {
        queue->finished[job - queue->long_count] = 1;
    }
    while (queue->low < queue->count && queue->finished[queue->low - queue->long_count]) {
        const Job *passed = &queue->jobs[queue->low++];
        const uint8_t *end = queue->span + queue->span_length;
        if (queue->span != NULL && passed->data >= end && passed->data - end <= SPAN_GAP) {
            queue->span_length = passed->data + passed->length - queue->span;
        } else {
            if (queue->span != NULL) {
                release_pages(queue->span, queue->span_length);
            }
            queue->span = passed->data;
            queue->span_length = passed->length;
        }
        if (queue->span_length >= RELEASE_STEP) {
            release_pages(queue->span, queue->span_length);
            queue->span = NULL;
            queue->span_length = 0;
        }
    }
    if (flush && queue->span != NULL) {
        release_pages(queue->span, queue->span_length);
        queue->span = NULL;
        queue->span_length = 0;
    }
}

static Py_ssize_t take_job(Queue *queue, int *on_long, int long_lanes) {
    Py_ssize_t job = -1;
    pthread_mutex_lock(&queue->lock);
    int long_left = queue->next_long < queue->long_count;
    int short_left = queue->next_short < queue->count;
    if (long_left && (!short_left || *on_long < long_lanes)) {
        ++*on_long;
        job = queue->next_long++;
    } else if (short_left) {
        job = queue->next_short++;
    }
    pthread_mutex_unlock(&queue->lock);
    return job;
}

static void job_done(Queue *queue, Py_ssize_t job, int *on_long) {
    if (queue->release && job < queue->long_count) {
        release_pages(queue->jobs[job].data, queue->jobs[job].length);
    } else if (queue->release) {
        pthread_mutex_lock(&queue->lock);
        release_behind(queue, job, 0);
        pthread_mutex_unlock(&queue->lock);
    }
    if (queue->done != NULL) {
        /* The digest is written before the flag is seen. */
        __atomic_store_n(&queue->done[job], 1, __ATOMIC_RELEASE);
    }
    if (job < queue->long_count) {
        --*on_long;
    }
}

/* -- portable: one buffer at a time --------------------------------------- */

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress_one(uint32_t state[8], const uint8_t *block) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 | (uint32_t)block[4 * t + 2] << 8 |
               (uint32_t)block[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = ROR32(w[t - 15], 7) ^ ROR32(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ROR32(w[t - 2], 17) ^ ROR32(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = h + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) + ((e & f) ^ (~e & g)) + K256[t] + w[t];
        uint32_t t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

static void hash_portable(Queue *queue) {
    int on_long = 0;
    Py_ssize_t job;
    while ((job = take_job(queue, &on_long, 1)) >= 0) {
        Cursor cursor;
        uint32_t state[8];
        const uint8_t *block;
        memcpy(state, IV256, sizeof state);
        cursor_start(&cursor, &queue->jobs[job]);
        while ((block = cursor_next(&cursor)) != NULL) {
            compress_one(state, block);
            if (queue->release && job < queue->long_count) {
                cursor_release(&cursor);
            }
        }
        put_digest(queue->jobs[job].digest, state);
        job_done(queue, job, &on_long);
    }
}

/* -- AVX-512: sixteen buffers at a time, one per lane ---------------------- */

#if HAVE_X86
#define LANES 16
#define TARGET __attribute__((target("avx512f,avx512bw")))

TARGET static inline __m512i xor3(__m512i x, __m512i y, __m512i z) {
    return _mm512_ternarylogic_epi32(x, y, z, 0x96);
}

/* One block for each lane: state[i] holds word i of the sixteen states. */
TARGET static void compress_lanes(__m512i state[8], const uint8_t *const blocks[LANES]) {
    const __m512i swap = _mm512_set_epi8(
        60, 61, 62, 63, 56, 57, 58, 59, 52, 53, 54, 55, 48, 49, 50, 51, 44, 45, 46, 47, 40, 41, 42, 43, 36, 37, 38,
        39, 32, 33, 34, 35, 28, 29, 30, 31, 24, 25, 26, 27, 20, 21, 22, 23, 16, 17, 18, 19, 12, 13, 14, 15, 8, 9, 10,
        11, 4, 5, 6, 7, 0, 1, 2, 3);
    /* Row i holds lane i's block; transposed, w[t] holds word t of every lane. */
    __m512i w[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        w[i] = _mm512_loadu_si512((const void *)blocks[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(w[i], w[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(w[i], w[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4) {
        w[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        w[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        w[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        w[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        int row = (i & 3) + 8 * (i >> 2);
        t[row] = _mm512_shuffle_i32x4(w[row], w[row + 4], 0x88);
        t[row + 4] = _mm512_shuffle_i32x4(w[row], w[row + 4], 0xdd);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        w[i] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(t[i], t[i + 8], 0x88), swap);
        w[i + 8] = _mm512_shuffle_epi8(_mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd), swap);
    }
    __m512i a = state[0], b = state[1], c = state[2], d = state[3];
    __m512i e = state[4], f = state[5], g = state[6], h = state[7];
#pragma GCC unroll 64
    for (int t = 0; t < 64; t++) {
        __m512i wt;
        if (t < 16) {
            wt = w[t];
        } else {
            __m512i w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
            __m512i s0 = xor3(_mm512_ror_epi32(w15, 7), _mm512_ror_epi32(w15, 18), _mm512_srli_epi32(w15, 3));
            __m512i s1 = xor3(_mm512_ror_epi32(w2, 17), _mm512_ror_epi32(w2, 19), _mm512_srli_epi32(w2, 10));
            wt = _mm512_add_epi32(_mm512_add_epi32(w[t & 15], s0), _mm512_add_epi32(w[(t - 7) & 15], s1));
            w[t & 15] = wt;
        }
        __m512i big1 = xor3(_mm512_ror_epi32(e, 6), _mm512_ror_epi32(e, 11), _mm512_ror_epi32(e, 25));
        __m512i choose = _mm512_ternarylogic_epi32(e, f, g, 0xCA);
        __m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, big1),
                                      _mm512_add_epi32(choose, _mm512_add_epi32(wt, _mm512_set1_epi32((int)K256[t]))));
        __m512i big0 = xor3(_mm512_ror_epi32(a, 2), _mm512_ror_epi32(a, 13), _mm512_ror_epi32(a, 22));
        __m512i majority = _mm512_ternarylogic_epi32(a, b, c, 0xE8);
        h = g;
        g = f;
        f = e;
        e = _mm512_add_epi32(d, t1);
        d = c;
        c = b;
        b = a;
        a = _mm512_add_epi32(t1, _mm512_add_epi32(big0, majority));
    }
    state[0] = _mm512_add_epi32(state[0], a);
    state[1] = _mm512_add_epi32(state[1], b);
    state[2] = _mm512_add_epi32(state[2], c);
    state[3] = _mm512_add_epi32(state[3], d);
    state[4] = _mm512_add_epi32(state[4], e);
    state[5] = _mm512_add_epi32(state[5], f);
    state[6] = _mm512_add_epi32(state[6], g);
    state[7] = _mm512_add_epi32(state[7], h);
}

TARGET static void hash_lanes(Queue *queue, int long_lanes) {
    static const uint8_t idle_block[64];
    const Job *jobs = queue->jobs;
    Cursor cursors[LANES];
    Py_ssize_t held[LANES];
    const uint8_t *blocks[LANES];
    uint32_t words[8][LANES] __attribute__((aligned(64)));
    __m512i state[8];
    int on_long = 0, running = 0;

    for (int lane = 0; lane < LANES; lane++) {
        held[lane] = take_job(queue, &on_long, long_lanes);
        for (int i = 0; i < 8; i++) {
            words[i][lane] = IV256[i];
        }
        if (held[lane] >= 0) {
            cursor_start(&cursors[lane], &jobs[held[lane]]);
            running++;
        }
    }
    for (int i = 0; i < 8; i++) {
        state[i] = _mm512_load_si512((const void *)words[i]);
    }
    while (running) {
        for (int lane = 0; lane < LANES; lane++) {
            blocks[lane] = held[lane] >= 0 ? cursor_next(&cursors[lane]) : idle_block;
            if (queue->release && held[lane] >= 0 && held[lane] < queue->long_count) {
                cursor_release(&cursors[lane]);
            }
        }
        compress_lanes(state, blocks);
        int finished = 0;
        for (int lane = 0; lane < LANES; lane++) {
            finished |= held[lane] >= 0 && cursor_last(&cursors[lane]);
        }
        if (!finished) {
            continue;
        }
        /* A lane is done: give out its digest, start it on the next job. */
        for (int i = 0; i < 8; i++) {
            _mm512_store_si512((void *)words[i], state[i]);
        }
        for (int lane = 0; lane < LANES; lane++) {
            if (held[lane] < 0 || !cursor_last(&cursors[lane])) {
                continue;
            }
            uint32_t digest[8];
            for (int i = 0; i < 8; i++) {
                digest[i] = words[i][lane];
                words[i][lane] = IV256[i];
            }
            put_digest(jobs[held[lane]].digest, digest);
            job_done(queue, held[lane], &on_long);
            held[lane] = take_job(queue, &on_long, long_lanes);
            if (held[lane] >= 0) {
                cursor_start(&cursors[lane], &jobs[held[lane]]);
            } else {
                running--;
            }
        }
        for (int i = 0; i < 8; i++) {
            state[i] = _mm512_load_si512((const void *)words[i]);
        }
    }
}

static int have_lanes(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#else
static int have_lanes(void) { return 0; }
static void hash_lanes(Queue *queue, int long_lanes) { hash_portable(queue); }
#endif

/* -- worker threads -------------------------------------------------------- */

typedef struct {
    Queue *queue;
    int lanes, long_lanes;
} Worker;

static void *work(void *argument) {
    Worker *worker = argument;
    if (worker->lanes) {
        hash_lanes(worker->queue, worker->long_lanes);
    } else {
        hash_portable(worker->queue);
    }
    return NULL;
}

/* Hash every job on `threads` threads (this one included). */
static void hash_all(Queue *queue, int threads, int lanes, int long_lanes) {
    pthread_t started[MAX_THREADS];
    Worker worker = {queue, lanes, long_lanes};
    int count = 0;
    while (count + 1 < threads && pthread_create(&started[count], NULL, work, &worker) == 0) {
        count++;
    }
    work(&worker);
    for (int i = 0; i < count; i++) {
        pthread_join(started[i], NULL);
    }
}

/* -- sha256_many ---------------------------------------------------------- */

static PyObject *sha256_many(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffers", "portable", "long_count", "long_lanes", "digests",
                               "done",    "threads",  "release",    NULL};
    PyObject *buffers, *digests_out = NULL, *done_out = NULL;
    int portable = 0, long_lanes = 8, threads = 1, release = 0;
    Py_ssize_t long_count = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pniOOip", keywords, &buffers, &portable, &long_count,
                                     &long_lanes, &digests_out, &done_out, &threads, &release)) {
        return NULL;
    }
    PyObject *sequence = PySequence_Fast(buffers, "sha256_many: buffers must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    Py_buffer *views = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Py_buffer));
    Job *jobs = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Job));
    Py_buffer digests = {0}, done = {0};
    uint8_t *own = NULL;
    PyObject *result = NULL;
    Py_ssize_t held = 0;
    if (views == NULL || jobs == NULL) {
        PyErr_NoMemory();
        goto finish;
    }
    if (long_count < 0 || long_count > count || long_lanes < 1 || threads < 1 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "sha256_many: long_count, long_lanes or threads out of range");
        goto finish;
    }
    if ((digests_out == NULL) != (done_out == NULL)) {
        PyErr_SetString(PyExc_TypeError, "sha256_many: give digests and done together");
        goto finish;
    }
    if (digests_out != NULL) {
        if (PyObject_GetBuffer(digests_out, &digests, PyBUF_WRITABLE) < 0) {
            goto finish;
        }
        if (PyObject_GetBuffer(done_out, &done, PyBUF_WRITABLE) < 0) {
            goto finish;
        }
        if (digests.len != 32 * count || done.len != count) {
            PyErr_SetString(PyExc_ValueError, "sha256_many: digests needs 32 bytes and done 1 byte per buffer");
            goto finish;
        }
        own = digests.buf;
    } else if ((own = PyMem_Malloc((size_t)(count ? count : 1) * 32)) == NULL) {
        PyErr_NoMemory();
        goto finish;
    }
    for (; held < count; held++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(sequence, held), &views[held], PyBUF_SIMPLE) < 0) {
            goto finish;
        }
        jobs[held].data = views[held].buf;
        jobs[held].length = views[held].len;
        jobs[held].digest = own + 32 * held;
    }
    Queue queue = {jobs, 0, long_count, long_count, count, done.buf, release, PTHREAD_MUTEX_INITIALIZER,
                   NULL, long_count, NULL, 0};
    if (release && (queue.finished = PyMem_Calloc((size_t)(count - long_count + 1), 1)) == NULL) {
        PyErr_NoMemory();
        goto finish;
    }
    int lanes = !portable && have_lanes();
    Py_BEGIN_ALLOW_THREADS;
    hash_all(&queue, threads, lanes, long_lanes);
    if (release) {
        release_behind(&queue, -1, 1);
    }
    Py_END_ALLOW_THREADS;
    PyMem_Free(queue.finished);
    if (digests_out != NULL) {
        result = Py_NewRef(Py_None);
        goto finish;
    }
    result = PyList_New(count);
    if (result == NULL) {
        goto finish;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *digest = PyBytes_FromStringAndSize((const char *)own + 32 * j, 32);
        if (digest == NULL) {
            Py_CLEAR(result);
            goto finish;
        }
        PyList_SET_ITEM(result, j, digest);
    }
finish:
    for (Py_ssize_t j = 0; j < held; j++) {
        PyBuffer_Release(&views[j]);
    }
    if (digests.obj != NULL) {
        PyBuffer_Release(&digests);
    } else {
        PyMem_Free(own);
    }
    if (done.obj != NULL) {
        PyBuffer_Release(&done);
    }
    PyMem_Free(views);
    PyMem_Free(jobs);
    Py_DECREF(sequence);
    return result;
}

static PyObject *multi_buffer(PyObject *module, PyObject *unused) {
    return PyBool_FromLong(have_lanes());
}

/* -- scan ----------------------------------------------------------------- */

/* Length of a NUL-terminated field. */
static Py_ssize_t field_length(const uint8_t *field, Py_ssize_t width) {
    const uint8_t *end = memchr(field, 0, (size_t)width);
    return end ? end - field : width;
}

static int is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* A header number written as plain octal digits, with the spaces and NULs
 * the model strips.  -1 when it is anything else (base-256, signs, junk). */
static int64_t plain_octal(const uint8_t *field, Py_ssize_t width) {
    Py_ssize_t end = field_length(field, width);
    Py_ssize_t start = 0;
    while (start < end && is_space(field[start])) {
        start++;
    }
    while (end > start && is_space(field[end - 1])) {
        end--;
    }
    if (end - start > 21) {
        return -1;
    }
    int64_t value = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (field[i] < '0' || field[i] > '7') {
            return -1;
        }
        value = value * 8 + (field[i] - '0');
    }
    return value;
}

/* Whether the header's checksum is plain octal and right. */
static int checksum_right(const uint8_t *header) {
    const uint8_t *field = header + 148;
    Py_ssize_t end = field_length(field, 8);
    Py_ssize_t start = 0;
    while (start < end && field[start] == ' ') {
        start++;
    }
    while (end > start && field[end - 1] == ' ') {
        end--;
    }
    if (end == start) {
        return 0;
    }
    int64_t stored = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (field[i] < '0' || field[i] > '7') {
            return 0;
        }
        stored = stored * 8 + (field[i] - '0');
    }
    int64_t sum = 8 * ' ';
    for (int i = 0; i < 512; i++) {
        if (i < 148 || i >= 156) {
            sum += header[i];
        }
    }
    return sum == stored;
}

static int all_zero(const uint8_t *block) {
    for (int i = 0; i < 512; i++) {
        if (block[i]) {
            return 0;
        }
    }
    return 1;
}

static PyObject *header_name(const uint8_t *header) {
    Py_ssize_t length = field_length(header, 100);
    int prefixed = memcmp(header + 257, "ustar\0", 6) == 0;
    if (prefixed) {
        prefixed = 0;
        for (int i = 345; i < 500; i++) {
            if (header[i]) {
                prefixed = 1;
                break;
            }
        }
    }
    if (!prefixed) {
        return PyBytes_FromStringAndSize((const char *)header, length);
    }
    Py_ssize_t prefix = field_length(header + 345, 155);
    PyObject *name = PyBytes_FromStringAndSize(NULL, prefix + 1 + length);
    if (name == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(name);
    memcpy(out, header + 345, (size_t)prefix);
    out[prefix] = '/';
    memcpy(out + prefix + 1, header, (size_t)length);
    return name;
}

static PyObject *scan(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffer", "release", NULL};
    PyObject *argument;
    int release = 0;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|p", keywords, &argument, &release)) {
        return NULL;
    }
    if (PyObject_GetBuffer(argument, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const uint8_t *data = view.buf;
    Py_ssize_t length = view.len;
    Py_ssize_t position = 0;
    PyObject *records = PyList_New(0);
    if (records == NULL) {
        goto fail;
    }
    for (;;) {
        if (position + 512 > length) {
            goto refuse;
        }
        const uint8_t *header = data + position;
        if (all_zero(header)) {
            break;
        }
        int64_t size = plain_octal(header + 124, 12);
        if (size < 0 || !checksum_right(header)) {
            goto refuse;
        }
        Py_ssize_t padded = (Py_ssize_t)((size + 511) & ~(int64_t)511);
        if (size > length || position + 512 + padded > length) {
            goto refuse;
        }
        int64_t fields[6] = {
            plain_octal(header + 100, 8),  plain_octal(header + 108, 8), plain_octal(header + 116, 8),
            plain_octal(header + 136, 12), plain_octal(header + 329, 8), plain_octal(header + 337, 8),
        };
        for (int i = 0; i < 6; i++) {
            if (fields[i] < 0) {
                goto refuse;
            }
        }
        uint8_t flag = header[156];
        PyObject *record = Py_BuildValue(
            "(nNLNNLLLLLLn)", position, PyBytes_FromStringAndSize((const char *)&flag, 1), (long long)size,
            header_name(header),
            PyBytes_FromStringAndSize((const char *)header + 157, field_length(header + 157, 100)),
            (long long)fields[0], (long long)fields[1], (long long)fields[2], (long long)fields[3],
            (long long)fields[4], (long long)fields[5], position + 512);
        if (record == NULL || PyList_Append(records, record) < 0) {
            Py_XDECREF(record);
            goto fail;
        }
        Py_DECREF(record);
        position += 512 + padded;
    }
    if (release) {
        release_pages(data, length);
    }
    PyBuffer_Release(&view);
    return records;
refuse:
    Py_DECREF(records);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(position);
fail:
    Py_XDECREF(records);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"sha256_many", (PyCFunction)(void (*)(void))sha256_many, METH_VARARGS | METH_KEYWORDS,
     "sha256_many(buffers, portable=False, long_count=0, long_lanes=8, digests=None, done=None, threads=1)\n"
     "-> list[bytes] | None: the SHA-256 of each buffer."},
    {"multi_buffer", multi_buffer, METH_NOARGS, "multi_buffer() -> bool: whether this CPU hashes sixteen at a time."},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_VARARGS | METH_KEYWORDS,
     "scan(buffer, release=False) -> list[tuple] | int: the headers of an uncompressed tar."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cowcheck._fastlayer",
    .m_doc = "Hashing and tar framing for large layers, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastlayer(void) { return PyModule_Create(&module); }
