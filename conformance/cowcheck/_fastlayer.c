/*
 * cowcheck._fastlayer: the two hot loops of reading a layer, in C.  Nothing
 * here decides what a layer means; the model (cowspec.layer_tar) does, and
 * the tests hold this module to it.  It runs on every CPU; only the hashing
 * backend differs (cowcheck.fastlayer chooses it).
 *
 *   Hasher(threads=1, backend="openssl")
 *       Native threads that hash buffers as they are added, and keep the
 *       digests.  Backends:
 *         "openssl"      OpenSSL's SHA-256 (libcrypto): `threads` threads,
 *                        each hashing one buffer at a time, buffers taken in
 *                        the order they came, long or short.  With SHA
 *                        instructions (x86 SHA-NI, arm64 SHA2) the fastest
 *                        way to hash one stream.
 *         "multibuffer"  AVX-512 only: `threads` threads each hash sixteen
 *                        short buffers (files) at a time, one per 32-bit lane,
 *                        in the order they came; one more thread hashes the
 *                        long ones (whole layers) with OpenSSL, since one
 *                        stream cannot use the lanes.
 *       add(buffers, long=False) -> index of the first one added
 *       add_spans(buffer, spans) -> index of the first one added: one short
 *                            buffer per (offset, size) pair of frame(), each
 *                            a part of `buffer` (no Python object per part)
 *       close()              no more buffers will come
 *       wait(first, end)     until buffers [first, end) are hashed (GIL released)
 *       digests(first, end)  their digests, 32 bytes each, end to end; lets go
 *                            of those buffers (asking again gives the digests)
 *       join()               close, and wait for the threads to finish
 *       cancel()             stop now, join, and let go of every buffer
 *       Buffers are held (the buffer protocol) until the hasher is cancelled
 *       or freed; they must not change meanwhile.
 *
 *   sha256_many(buffers, backend="openssl", long_count=0, threads=1) -> list[bytes]
 *       The same, all at once: the first long_count buffers are long.
 *
 *   multi_buffer() -> bool   whether the CPU runs the "multibuffer" backend
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
 *       archive with the model's own reader, which decides.
 *
 *   frame(buffer, file_flags) -> bytes | int
 *       The same framing as scan(), the GIL let go, keeping only where the
 *       members whose type flag is in `file_flags` lie: (offset, size)
 *       pairs of native Py_ssize_t; or where scan() stops vouching.
 *
 *   decode(buffer, digests, kinds, entry, content, no_device) -> tuple | None
 *       A layer of plain ustar headers as the model decodes it
 *       (cowspec.oci.layer_tar.decode_members of iter_members): its
 *       entries in canonical order, made as the model's TarEntry and
 *       Content, and its whiteouts and opaque directories; None for
 *       anything the model must read or would refuse (see the function).
 *       The tests hold it to the model's decoding, case by case and on
 *       thousands of generated and damaged archives.
 *
 *   members(...), entries_json(...): see their functions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#define MAX_THREADS 64

#if HAVE_X86 /* what the AVX-512 kernel needs */

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


#endif

/* -- one job: a buffer and its digest -------------------------------------- */

typedef struct {
    const uint8_t *data;
    Py_ssize_t length;
    Py_buffer view; /* held while the job lives */
    uint8_t digest[32];
    uint8_t is_long, done, failed;
} Job;

#if HAVE_X86

/* The blocks of a job: its whole 64-byte blocks in place, then one or two
 * padding blocks built in `tail` (the last bytes, 0x80, zeros, the length
 * in bits, big-endian). */
typedef struct {
    const Job *job;
    Py_ssize_t offset;  /* next whole block in the data */
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

static void put_digest(uint8_t *out, const uint32_t state[8]) {
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(state[i] >> 8);
        out[4 * i + 3] = (uint8_t)state[i];
    }
}


#endif

/* -- the queue of jobs, shared by the worker threads ------------------------ */

#define CHUNK_JOBS 4096

/* Jobs live in chunks that never move, so that a worker may hold a job
 * while others are added.  Long and short jobs wait in a queue each, in
 * the order they came.  Everything here is read and written under lock. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* workers: jobs came, or no more will */
    pthread_cond_t finished; /* readers: a job was hashed */
    Job **chunks;
    Py_ssize_t chunk_capacity, count;
    Py_ssize_t *longs, long_count, long_capacity, next_long;
    Py_ssize_t *shorts, short_count, short_capacity, next_short;
    int closed;
    volatile int cancelled; /* stop now: nobody wants the rest */
} Queue;

static void queue_init(Queue *queue) {
    memset(queue, 0, sizeof *queue);
    pthread_mutex_init(&queue->lock, NULL);
    pthread_cond_init(&queue->wake, NULL);
    pthread_cond_init(&queue->finished, NULL);
}

static Job *job_at(const Queue *queue, Py_ssize_t index) {
    return &queue->chunks[index / CHUNK_JOBS][index % CHUNK_JOBS];
}

static int grow(Py_ssize_t **items, Py_ssize_t *capacity, Py_ssize_t needed) {
    if (needed <= *capacity) {
        return 0;
    }
    Py_ssize_t wanted = *capacity ? *capacity : 1024;
    while (wanted < needed) {
        wanted *= 2;
    }
    Py_ssize_t *more = PyMem_RawRealloc(*items, (size_t)wanted * sizeof **items);
    if (more == NULL) {
        return -1;
    }
    *items = more;
    *capacity = wanted;
    return 0;
}

/* Add a job for a buffer already held (lock held).  -1 without memory. */
static Py_ssize_t queue_add(Queue *queue, const Py_buffer *view, int is_long) {
    Py_ssize_t index = queue->count;
    if (index % CHUNK_JOBS == 0) {
        Py_ssize_t chunk = index / CHUNK_JOBS;
        if (chunk >= queue->chunk_capacity) {
            Py_ssize_t wanted = queue->chunk_capacity ? 2 * queue->chunk_capacity : 64;
            Job **more = PyMem_RawRealloc(queue->chunks, (size_t)wanted * sizeof *more);
            if (more == NULL) {
                return -1;
            }
            queue->chunks = more;
            queue->chunk_capacity = wanted;
        }
        if ((queue->chunks[chunk] = PyMem_RawCalloc(CHUNK_JOBS, sizeof(Job))) == NULL) {
            return -1;
        }
    }
    Py_ssize_t **ids = is_long ? &queue->longs : &queue->shorts;
    Py_ssize_t *count = is_long ? &queue->long_count : &queue->short_count;
    if (grow(ids, is_long ? &queue->long_capacity : &queue->short_capacity, *count + 1) < 0) {
        return -1;
    }
    Job *job = job_at(queue, index);
    job->view = *view;
    job->data = view->buf;
    job->length = view->len;
    job->is_long = (uint8_t)is_long;
    (*ids)[(*count)++] = index;
    queue->count++;
    return index;
}

#define TAKES_LONG 1
#define TAKES_SHORT 2

/* The next job of the kinds a worker `takes`, the one that came first
 * (lock held).  NULL if none now. */
static Job *next_job(Queue *queue, int takes) {
    int long_left = (takes & TAKES_LONG) && queue->next_long < queue->long_count;
    int short_left = (takes & TAKES_SHORT) && queue->next_short < queue->short_count;
    if (long_left && short_left) {
        long_left = queue->longs[queue->next_long] < queue->shorts[queue->next_short];
        short_left = !long_left;
    }
    if (long_left) {
        return job_at(queue, queue->longs[queue->next_long++]);
    }
    if (short_left) {
        return job_at(queue, queue->shorts[queue->next_short++]);
    }
    return NULL;
}

/* Fill `idle` empty slots with jobs; with `block`, wait for at least one
 * unless the queue is closed and empty.  How many were filled. */
static int take_jobs(Queue *queue, Job **slots, int slot_count, int takes, int block) {
    int filled = 0;
    pthread_mutex_lock(&queue->lock);
    while (!queue->cancelled) {
        for (int slot = 0; slot < slot_count; slot++) {
            if (slots[slot] == NULL && (slots[slot] = next_job(queue, takes)) != NULL) {
                filled++;
            }
        }
        if (filled || !block || queue->closed) {
            break;
        }
        pthread_cond_wait(&queue->wake, &queue->lock);
    }
    pthread_mutex_unlock(&queue->lock);
    return filled;
}

static void job_done(Queue *queue, Job *job) {
    pthread_mutex_lock(&queue->lock);
    job->done = 1;
    pthread_cond_broadcast(&queue->finished);
    pthread_mutex_unlock(&queue->lock);
}

/* -- OpenSSL: one buffer at a time, in order ----------------------------- */

#define OPENSSL_STEP (1 << 20)

static void hash_openssl(Queue *queue, int takes) {
    Job *slot[1] = {NULL};
    EVP_MD_CTX *context = EVP_MD_CTX_new();
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); /* fetched once, not per buffer */
#else
    const EVP_MD *sha256 = EVP_sha256();
#endif
    int failed = context == NULL || sha256 == NULL;
    while (take_jobs(queue, slot, 1, takes, 1)) {
        Job *job = slot[0];
        unsigned int size = 32;
        failed = failed || !EVP_DigestInit_ex(context, sha256, NULL);
        /* A step at a time, so that a cancel is heard within a megabyte. */
        for (Py_ssize_t at = 0; !failed && at < job->length && !queue->cancelled; at += OPENSSL_STEP) {
            Py_ssize_t step = job->length - at < OPENSSL_STEP ? job->length - at : OPENSSL_STEP;
            failed = !EVP_DigestUpdate(context, job->data + at, (size_t)step);
        }
        if (queue->cancelled) {
            break;
        }
        failed = failed || !EVP_DigestFinal_ex(context, job->digest, &size);
        if (failed) {
            /* Never a digest that is not SHA-256: a zero one matches nothing,
             * and the caller checks what it waits for. */
            memset(job->digest, 0, 32);
            job->failed = 1;
        }
        job_done(queue, job);
        slot[0] = NULL;
    }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    EVP_MD_free(sha256);
#endif
    EVP_MD_CTX_free(context);
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


TARGET static void hash_lanes(Queue *queue) {
    static const uint8_t idle_block[64];
    Job *held[LANES] = {NULL};
    Cursor cursors[LANES];
    const uint8_t *blocks[LANES];
    uint32_t words[8][LANES] __attribute__((aligned(64)));
    __m512i state[8];
    int running = 0;

    while (!queue->cancelled) {
        /* Idle lanes take jobs; with none running, wait for one. */
        if (running < LANES) {
            Job *before[LANES];
            memcpy(before, held, sizeof held);
            running += take_jobs(queue, held, LANES, TAKES_SHORT, running == 0);
            for (int lane = 0; lane < LANES; lane++) {
                if (held[lane] != NULL && before[lane] == NULL) {
                    cursor_start(&cursors[lane], held[lane]);
                    for (int i = 0; i < 8; i++) {
                        words[i][lane] = IV256[i];
                    }
                }
            }
        }
        if (running == 0) {
            return; /* closed, and nothing left */
        }
        for (int lane = 0; lane < LANES; lane++) {
            blocks[lane] = held[lane] != NULL ? cursor_next(&cursors[lane]) : idle_block;
        }
        for (int i = 0; i < 8; i++) {
            state[i] = _mm512_load_si512((const void *)words[i]);
        }
        compress_lanes(state, blocks);
        for (int i = 0; i < 8; i++) {
            _mm512_store_si512((void *)words[i], state[i]);
        }
        /* A lane whose job had its last block: give out the digest. */
        for (int lane = 0; lane < LANES; lane++) {
            if (held[lane] == NULL || !cursor_last(&cursors[lane])) {
                continue;
            }
            uint32_t digest[8];
            for (int i = 0; i < 8; i++) {
                digest[i] = words[i][lane];
            }
            put_digest(held[lane]->digest, digest);
            job_done(queue, held[lane]);
            held[lane] = NULL;
            running--;
        }
    }
}

static int have_lanes(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#else
static int have_lanes(void) { return 0; }
static void hash_lanes(Queue *queue) { hash_openssl(queue, TAKES_SHORT); }
#endif

/* -- worker threads -------------------------------------------------------- */

/* Whether `name` asks for the lanes; -1 (an error set) for no backend this CPU runs. */
static int backend_lanes(const char *name) {
    if (strcmp(name, "openssl") == 0) {
        return 0;
    }
    if (strcmp(name, "multibuffer") == 0 && have_lanes()) {
        return 1;
    }
    PyErr_Format(PyExc_ValueError, "no hashing backend %s on this CPU (openssl%s)", name,
                 have_lanes() ? ", multibuffer" : "");
    return -1;
}

typedef struct {
    Queue *queue;
    int lanes; /* 1: hash_lanes, short jobs; 0: hash_openssl, the kinds in `takes` */
    int takes;
} Worker;


static void *work(void *argument) {
    Worker *worker = argument;
    if (worker->lanes) {
        hash_lanes(worker->queue);
    } else {
        hash_openssl(worker->queue, worker->takes);
    }
    return NULL;
}

/* Start the threads of a backend: `threads` of them, and with the lanes
 * one more for the long jobs.  How many started (workers[i] is thread i's). */
static int start_workers(Queue *queue, int lanes, int threads, Worker *workers, pthread_t *started) {
    int wanted = threads + (lanes ? 1 : 0), count = 0;
    for (; count < wanted; count++) {
        int for_longs = lanes && count == threads;
        workers[count] = (Worker){queue, lanes && !for_longs, for_longs ? TAKES_LONG : TAKES_LONG | TAKES_SHORT};
        if (pthread_create(&started[count], NULL, work, &workers[count]) != 0) {
            break;
        }
    }
    return count;
}

static void queue_close(Queue *queue) {
    pthread_mutex_lock(&queue->lock);
    queue->closed = 1;
    pthread_cond_broadcast(&queue->wake);
    pthread_mutex_unlock(&queue->lock);
}

/* Let go of every buffer and of the queue's memory (GIL held). */
static void queue_free(Queue *queue) {
    for (Py_ssize_t index = 0; index < queue->count; index++) {
        PyBuffer_Release(&job_at(queue, index)->view);
    }
    for (Py_ssize_t chunk = 0; chunk * CHUNK_JOBS < queue->count; chunk++) {
        PyMem_RawFree(queue->chunks[chunk]);
    }
    PyMem_RawFree(queue->chunks);
    PyMem_RawFree(queue->longs);
    PyMem_RawFree(queue->shorts);
    memset(queue, 0, sizeof *queue);
}

/* Hold each buffer of `buffers` and add them as jobs, in one turn of the
 * lock; the index of the first. */
static Py_ssize_t add_buffers(Queue *queue, PyObject *buffers, int is_long) {
    PyObject *sequence = PySequence_Fast(buffers, "buffers must be a sequence");
    if (sequence == NULL) {
        return -1;
    }
    Py_ssize_t size = PySequence_Fast_GET_SIZE(sequence), held = 0, added = 0, first = -1;
    Py_buffer *views = PyMem_Calloc((size_t)(size ? size : 1), sizeof(Py_buffer));
    if (views == NULL) {
        PyErr_NoMemory();
    }
    while (views != NULL && held < size &&
           PyObject_GetBuffer(PySequence_Fast_GET_ITEM(sequence, held), &views[held], PyBUF_SIMPLE) == 0) {
        held++;
    }
    if (views != NULL && held == size) {
        pthread_mutex_lock(&queue->lock);
        first = queue->count;
        while (added < size && queue_add(queue, &views[added], is_long) >= 0) {
            added++;
        }
        pthread_cond_broadcast(&queue->wake);
        pthread_mutex_unlock(&queue->lock);
        if (added < size) {
            PyErr_NoMemory();
        }
    }
    /* The queue holds the buffers it took; let go of the others. */
    for (Py_ssize_t index = added; index < held; index++) {
        PyBuffer_Release(&views[index]);
    }
    PyMem_Free(views);
    Py_DECREF(sequence);
    return added == size ? first : -1;
}

/* -- Hasher ----------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Queue queue;
    Worker workers[MAX_THREADS + 1];
    pthread_t threads[MAX_THREADS + 1];
    int thread_count, started, joined;
} Hasher;

/* Stop the threads now and wait for them (GIL held; released while waiting). */
static void cancel_workers(Queue *queue, pthread_t *threads, int count) {
    pthread_mutex_lock(&queue->lock);
    queue->cancelled = 1;
    queue->closed = 1;
    pthread_cond_broadcast(&queue->wake);
    pthread_cond_broadcast(&queue->finished);
    pthread_mutex_unlock(&queue->lock);
    Py_BEGIN_ALLOW_THREADS;
    for (int i = 0; i < count; i++) {
        pthread_join(threads[i], NULL);
    }
    Py_END_ALLOW_THREADS;
}

static int Hasher_init(Hasher *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"threads", "backend", NULL};
    int threads = 1;
    const char *backend = "openssl";
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Hasher: already started");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|is", keywords, &threads, &backend)) {
        return -1;
    }
    int lanes = backend_lanes(backend);
    if (lanes < 0) {
        return -1;
    }
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "Hasher: threads out of range");
        return -1;
    }
    queue_init(&self->queue);
    self->thread_count = start_workers(&self->queue, lanes, threads, self->workers, self->threads);
    if (self->thread_count < threads + (lanes ? 1 : 0)) {
        cancel_workers(&self->queue, self->threads, self->thread_count);
        queue_free(&self->queue);
        self->thread_count = 0;
        PyErr_SetString(PyExc_OSError, "Hasher: cannot start its threads");
        return -1;
    }
    self->started = 1;
    return 0;
}

static int Hasher_started(Hasher *self) {
    if (!self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Hasher: not started, or cancelled");
        return 0;
    }
    return 1;
}

static PyObject *Hasher_add(Hasher *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffers", "long", NULL};
    PyObject *buffers;
    int is_long = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|p", keywords, &buffers, &is_long) || !Hasher_started(self)) {
        return NULL;
    }
    if (self->queue.closed) {
        PyErr_SetString(PyExc_ValueError, "Hasher: closed, no more buffers");
        return NULL;
    }
    Py_ssize_t first = add_buffers(&self->queue, buffers, is_long);
    return first < 0 ? NULL : PyLong_FromSsize_t(first);
}

/* add_spans(buffer, spans): one job per (offset, size) pair of `spans` (as
 * frame() gives them), each a part of `buffer`, held as add() holds a buffer;
 * the index of the first.  No Python object per part. */
static PyObject *Hasher_add_spans(Hasher *self, PyObject *args) {
    PyObject *buffer;
    Py_buffer spans;
    if (!PyArg_ParseTuple(args, "Oy*", &buffer, &spans)) {
        return NULL;
    }
    const Py_ssize_t *pairs = spans.buf;
    Py_ssize_t count = spans.len / (Py_ssize_t)(2 * sizeof(Py_ssize_t)), added = 0, first = -1;
    Py_buffer whole;
    if (!Hasher_started(self) || PyObject_GetBuffer(buffer, &whole, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&spans);
        return NULL;
    }
    if (spans.len % (Py_ssize_t)(2 * sizeof(Py_ssize_t))) {
        PyErr_SetString(PyExc_ValueError, "Hasher.add_spans: spans are (offset, size) pairs");
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (pairs[2 * i] < 0 || pairs[2 * i + 1] < 0 || pairs[2 * i] > whole.len ||
            pairs[2 * i + 1] > whole.len - pairs[2 * i]) {
            PyErr_SetString(PyExc_ValueError, "Hasher.add_spans: a span lies outside the buffer");
            goto done;
        }
    }
    if (self->queue.closed) {
        PyErr_SetString(PyExc_ValueError, "Hasher: closed, no more buffers");
        goto done;
    }
    pthread_mutex_lock(&self->queue.lock);
    first = self->queue.count;
    for (; added < count; added++) {
        Py_buffer part;
        /* Each job holds the buffer once, as add() would hold a slice of it. */
        if (PyObject_GetBuffer(buffer, &part, PyBUF_SIMPLE) < 0) {
            break;
        }
        Py_ssize_t index = queue_add(&self->queue, &part, 0);
        if (index < 0) {
            PyBuffer_Release(&part);
            PyErr_NoMemory();
            break;
        }
        Job *job = job_at(&self->queue, index);
        job->data = (const uint8_t *)part.buf + pairs[2 * added];
        job->length = pairs[2 * added + 1];
    }
    pthread_cond_broadcast(&self->queue.wake);
    pthread_mutex_unlock(&self->queue.lock);
done:
    PyBuffer_Release(&whole);
    PyBuffer_Release(&spans);
    if (added < count || first < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(first);
}

static void Hasher_stop(Hasher *self) {
    if (!self->started || self->joined) {
        return;
    }
    queue_close(&self->queue);
    Py_BEGIN_ALLOW_THREADS;
    for (int i = 0; i < self->thread_count; i++) {
        pthread_join(self->threads[i], NULL);
    }
    Py_END_ALLOW_THREADS;
    self->joined = 1;
}

static PyObject *Hasher_cancel(Hasher *self, PyObject *unused) {
    if (!Hasher_started(self)) {
        return NULL;
    }
    if (!self->joined) {
        cancel_workers(&self->queue, self->threads, self->thread_count);
        self->joined = 1;
    }
    /* Nothing will be asked of it again: let go of the buffers now, not
     * whenever the last reference goes. */
    queue_free(&self->queue);
    self->started = 0;
    Py_RETURN_NONE;
}

static PyObject *Hasher_close(Hasher *self, PyObject *unused) {
    if (!Hasher_started(self)) {
        return NULL;
    }
    queue_close(&self->queue);
    Py_RETURN_NONE;
}

static int parse_range(Hasher *self, PyObject *args, Py_ssize_t *first, Py_ssize_t *end) {
    if (!PyArg_ParseTuple(args, "nn", first, end) || !Hasher_started(self)) {
        return 0;
    }
    if (*first < 0 || *end < *first || *end > self->queue.count) {
        PyErr_SetString(PyExc_IndexError, "Hasher: no such buffers");
        return 0;
    }
    return 1;
}

static PyObject *Hasher_wait(Hasher *self, PyObject *args) {
    Py_ssize_t first, end;
    if (!parse_range(self, args, &first, &end)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    pthread_mutex_lock(&self->queue.lock);
    while (first < end && !self->queue.cancelled) {
        if (job_at(&self->queue, first)->done) {
            first++;
        } else {
            pthread_cond_wait(&self->queue.finished, &self->queue.lock);
        }
    }
    pthread_mutex_unlock(&self->queue.lock);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *Hasher_digests(Hasher *self, PyObject *args) {
    Py_ssize_t first, end;
    if (!parse_range(self, args, &first, &end)) {
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, 32 * (end - first));
    if (result == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(result);
    pthread_mutex_lock(&self->queue.lock);
    for (Py_ssize_t index = first; index < end; index++) {
        const Job *job = job_at(&self->queue, index);
        if (!job->done || job->failed) {
            pthread_mutex_unlock(&self->queue.lock);
            Py_DECREF(result);
            PyErr_SetString(job->done ? PyExc_RuntimeError : PyExc_ValueError,
                            job->done ? "Hasher: OpenSSL failed to hash"
                                      : "Hasher: a buffer is not hashed yet (wait first)");
            return NULL;
        }
        memcpy(out + 32 * (index - first), job->digest, 32);
    }
    pthread_mutex_unlock(&self->queue.lock);
    /* Hashed and told: no thread reads these buffers again, let go of them
     * now (a second release of a buffer does nothing). */
    for (Py_ssize_t index = first; index < end; index++) {
        PyBuffer_Release(&job_at(&self->queue, index)->view);
    }
    return result;
}

static PyObject *Hasher_join(Hasher *self, PyObject *unused) {
    if (!Hasher_started(self)) {
        return NULL;
    }
    Hasher_stop(self);
    Py_RETURN_NONE;
}

static void Hasher_dealloc(Hasher *self) {
    Hasher_stop(self);
    if (self->started) {
        queue_free(&self->queue);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Hasher_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Hasher_add, METH_VARARGS | METH_KEYWORDS,
     "add(buffers, long=False) -> int: hash these too; the index of the first."},
    {"add_spans", (PyCFunction)Hasher_add_spans, METH_VARARGS,
     "add_spans(buffer, spans) -> int: hash these parts of buffer ((offset, size) pairs of frame()) too."},
    {"close", (PyCFunction)Hasher_close, METH_NOARGS, "close(): no more buffers will come."},
    {"wait", (PyCFunction)Hasher_wait, METH_VARARGS, "wait(first, end): until buffers [first, end) are hashed."},
    {"digests", (PyCFunction)Hasher_digests, METH_VARARGS,
     "digests(first, end) -> bytes: the SHA-256 of buffers [first, end), 32 bytes each."},
    {"join", (PyCFunction)Hasher_join, METH_NOARGS, "join(): close, and wait for every thread to finish."},
    {"cancel", (PyCFunction)Hasher_cancel, METH_NOARGS,
     "cancel(): stop hashing now, wait for the threads, let go of every buffer."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HasherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cowcheck._fastlayer.Hasher",
    .tp_doc = "Hasher(threads=1, backend='openssl'): threads that hash buffers.",
    .tp_basicsize = sizeof(Hasher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hasher_init,
    .tp_dealloc = (destructor)Hasher_dealloc,
    .tp_methods = Hasher_methods,
};

/* -- sha256_many ---------------------------------------------------------- */

static PyObject *sha256_many(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffers", "backend", "long_count", "threads", NULL};
    PyObject *buffers;
    int threads = 1;
    const char *backend = "openssl";
    Py_ssize_t long_count = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|sni", keywords, &buffers, &backend, &long_count, &threads)) {
        return NULL;
    }
    int lanes = backend_lanes(backend);
    if (lanes < 0) {
        return NULL;
    }
    PyObject *sequence = PySequence_Fast(buffers, "sha256_many: buffers must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    if (long_count < 0 || long_count > count || threads < 1 || threads > MAX_THREADS) {
        Py_DECREF(sequence);
        PyErr_SetString(PyExc_ValueError, "sha256_many: long_count or threads out of range");
        return NULL;
    }
    PyObject *longs = PySequence_GetSlice(sequence, 0, long_count);
    PyObject *shorts = PySequence_GetSlice(sequence, long_count, count);
    Py_DECREF(sequence);
    Queue queue;
    queue_init(&queue);
    Worker workers[MAX_THREADS + 1];
    pthread_t started[MAX_THREADS + 1];
    PyObject *result = NULL;
    Py_ssize_t start = longs == NULL || shorts == NULL ? -1 : add_buffers(&queue, longs, 1);
    if (start >= 0) {
        start = add_buffers(&queue, shorts, 0);
    }
    Py_XDECREF(longs);
    Py_XDECREF(shorts);
    if (start >= 0) {
        queue.closed = 1;
        int running = start_workers(&queue, lanes, threads, workers, started);
        if (running < threads + (lanes ? 1 : 0)) {
            cancel_workers(&queue, started, running);
            queue_free(&queue);
            PyErr_SetString(PyExc_OSError, "sha256_many: cannot start its threads");
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS;
        for (int i = 0; i < running; i++) {
            pthread_join(started[i], NULL);
        }
        Py_END_ALLOW_THREADS;
        result = PyList_New(count);
        for (Py_ssize_t index = 0; result != NULL && index < count; index++) {
            if (job_at(&queue, index)->failed) {
                Py_CLEAR(result);
                PyErr_SetString(PyExc_RuntimeError, "sha256_many: OpenSSL failed to hash");
                break;
            }
            PyObject *digest = PyBytes_FromStringAndSize((const char *)job_at(&queue, index)->digest, 32);
            if (digest == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, index, digest);
        }
    }
    queue_free(&queue);
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
    /* Every byte added up (a loop compilers vectorise on any CPU), the field's own taken back out. */
    int64_t sum = 8 * ' ';
    uint32_t all = 0;
    for (int i = 0; i < 512; i++) {
        all += header[i];
    }
    for (int i = 148; i < 156; i++) {
        all -= header[i];
    }
    sum += all;
    return sum == stored;
}

static int all_zero(const uint8_t *block) {
    if (block[0]) {
        return 0; /* a header: its name's first byte */
    }
    uint8_t any = 0;
    for (int i = 0; i < 512; i++) {
        any |= block[i];
    }
    return any == 0;
}

/* One header framed: its numbers, where its member's bytes are and where the next header is. */
typedef struct {
    int64_t size, mode, uid, gid, mtime, major, minor;
    uint8_t flag;
    Py_ssize_t data, next;
} Framed;

#define FRAME_END 0
#define FRAME_HEADER 1
#define FRAME_REFUSED (-1)

/* Frame the header at `position`: FRAME_END at the end-of-archive block,
 * FRAME_HEADER with `out` filled, FRAME_REFUSED where it will not vouch
 * (truncation, a wrong checksum, a number that is not plain octal). */
static int frame_header(const uint8_t *data, Py_ssize_t length, Py_ssize_t position, Framed *out) {
    if (position + 512 > length) {
        return FRAME_REFUSED;
    }
    const uint8_t *header = data + position;
    if (all_zero(header)) {
        return FRAME_END;
    }
    int64_t size = plain_octal(header + 124, 12);
    if (size < 0 || !checksum_right(header)) {
        return FRAME_REFUSED;
    }
    Py_ssize_t padded = (Py_ssize_t)((size + 511) & ~(int64_t)511);
    if (size > length || position + 512 + padded > length) {
        return FRAME_REFUSED;
    }
    out->size = size;
    out->mode = plain_octal(header + 100, 8);
    out->uid = plain_octal(header + 108, 8);
    out->gid = plain_octal(header + 116, 8);
    out->mtime = plain_octal(header + 136, 12);
    out->major = plain_octal(header + 329, 8);
    out->minor = plain_octal(header + 337, 8);
    if (out->mode < 0 || out->uid < 0 || out->gid < 0 || out->mtime < 0 || out->major < 0 || out->minor < 0) {
        return FRAME_REFUSED;
    }
    out->flag = header[156];
    out->data = position + 512;
    out->next = position + 512 + padded;
    return FRAME_HEADER;
}

/* The ustar prefix and name of a header joined as the model joins them, into
 * `out` (room for 256 bytes); its length. */
static Py_ssize_t joined_name(const uint8_t *header, char *out) {
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
        memcpy(out, header, (size_t)length);
        return length;
    }
    Py_ssize_t prefix = field_length(header + 345, 155);
    memcpy(out, header + 345, (size_t)prefix);
    out[prefix] = '/';
    memcpy(out + prefix + 1, header, (size_t)length);
    return prefix + 1 + length;
}

static PyObject *header_name(const uint8_t *header) {
    char name[256];
    return PyBytes_FromStringAndSize(name, joined_name(header, name));
}

static PyObject *scan(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffer", NULL};
    PyObject *argument;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", keywords, &argument)) {
        return NULL;
    }
    if (PyObject_GetBuffer(argument, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const uint8_t *data = view.buf;
    Py_ssize_t position = 0;
    PyObject *records = PyList_New(0);
    if (records == NULL) {
        goto fail;
    }
    for (;;) {
        Framed framed;
        int found = frame_header(data, view.len, position, &framed);
        if (found == FRAME_END) {
            break;
        }
        if (found == FRAME_REFUSED) {
            goto refuse;
        }
        const uint8_t *header = data + position;
        PyObject *record = Py_BuildValue(
            "(nNLNNLLLLLLn)", position, PyBytes_FromStringAndSize((const char *)&framed.flag, 1),
            (long long)framed.size, header_name(header),
            PyBytes_FromStringAndSize((const char *)header + 157, field_length(header + 157, 100)),
            (long long)framed.mode, (long long)framed.uid, (long long)framed.gid, (long long)framed.mtime,
            (long long)framed.major, (long long)framed.minor, framed.data);
        if (record == NULL || PyList_Append(records, record) < 0) {
            Py_XDECREF(record);
            goto fail;
        }
        Py_DECREF(record);
        position = framed.next;
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

/* -- frame: where the files are, without a Python object per header --------- */

typedef struct {
    Py_ssize_t *items; /* offset, size, offset, size... */
    Py_ssize_t count, room;
} Spans;

static int spans_add(Spans *spans, Py_ssize_t offset, Py_ssize_t size) {
    if (spans->count + 2 > spans->room) {
        Py_ssize_t room = spans->room ? 2 * spans->room : 4096;
        Py_ssize_t *more = PyMem_RawRealloc(spans->items, (size_t)room * sizeof *more);
        if (more == NULL) {
            return -1;
        }
        spans->items = more;
        spans->room = room;
    }
    spans->items[spans->count++] = offset;
    spans->items[spans->count++] = size;
    return 0;
}

/* frame(buffer, file_flags) -> bytes | int: the (offset, size) of every
 * member whose type flag is one of `file_flags`, as native Py_ssize_t pairs,
 * framing every header as scan() does (the GIL released meanwhile); or the
 * position of the first header scan() would refuse. */
static PyObject *frame(PyObject *module, PyObject *args) {
    Py_buffer view, flags;
    if (!PyArg_ParseTuple(args, "y*y*", &view, &flags)) {
        return NULL;
    }
    uint8_t is_file[256] = {0};
    for (Py_ssize_t i = 0; i < flags.len; i++) {
        is_file[((const uint8_t *)flags.buf)[i]] = 1;
    }
    PyBuffer_Release(&flags);
    Spans spans = {NULL, 0, 0};
    Py_ssize_t position = 0;
    int found = FRAME_HEADER, failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    while (!failed) {
        Framed framed;
        found = frame_header(view.buf, view.len, position, &framed);
        if (found != FRAME_HEADER) {
            break;
        }
        if (is_file[framed.flag]) {
            failed = spans_add(&spans, framed.data, (Py_ssize_t)framed.size) < 0;
        }
        position = framed.next;
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    PyObject *result;
    if (failed) {
        result = PyErr_NoMemory();
    } else if (found == FRAME_REFUSED) {
        result = PyLong_FromSsize_t(position);
    } else {
        result = PyBytes_FromStringAndSize((const char *)spans.items,
                                           (Py_ssize_t)(spans.count * (Py_ssize_t)sizeof(Py_ssize_t)));
    }
    PyMem_RawFree(spans.items);
    return result;
}

/* A new instance of the tuple subclass `type` holding `items` (stolen). */
static PyObject *tuple_of(PyObject *type, PyObject *items) {
    if (items == NULL) {
        return NULL;
    }
    PyObject *args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL) {
        return NULL;
    }
    PyObject *made = PyTuple_Type.tp_new((PyTypeObject *)type, args, NULL);
    Py_DECREF(args);
    return made;
}

static PyObject *decoded(PyObject *raw) {
    return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), "surrogateescape");
}

/* The members of framed records that need no PAX record, long name or device
   number: what the model's iter_members gives for them, field for field. */
static PyObject *members(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"records", "digests", "member", "content", "kinds", "no_device", NULL};
    PyObject *records, *member, *content, *kinds, *no_device;
    Py_buffer digests;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!y*OOO!O", keywords, &PyList_Type, &records, &digests,
                                     &member, &content, &PyDict_Type, &kinds, &no_device)) {
        return NULL;
    }
    static const char hex[] = "0123456789abcdef";
    const uint8_t *digest = digests.buf;
    Py_ssize_t files = digests.len / 32;
    Py_ssize_t count = PyList_GET_SIZE(records);
    Py_ssize_t file = 0;
    PyObject *file_kind = PyUnicode_InternFromString("file");
    PyObject *empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *empty_tuple = PyTuple_New(0);
    PyObject *out = PyList_New(count);
    if (file_kind == NULL || empty_bytes == NULL || empty_tuple == NULL || out == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != 12) {
            PyErr_SetString(PyExc_TypeError, "members: a record is a 12-tuple of scan()");
            goto fail;
        }
        PyObject *kind = PyDict_GetItemWithError(kinds, PyTuple_GET_ITEM(record, 1));
        if (kind == NULL) {
            if (PyErr_Occurred()) {
                goto fail;
            }
            goto model; /* an extended record, a device or an unknown type: the model's reading */
        }
        long long fields[4];
        for (int f = 0; f < 4; f++) {
            fields[f] = PyLong_AsLongLong(PyTuple_GET_ITEM(record, 5 + f));
            if (fields[f] == -1 && PyErr_Occurred()) {
                goto fail;
            }
        }
        PyObject *mtime;
        if (fields[3] <= INT64_MAX / 1000000000) {
            mtime = PyLong_FromLongLong(fields[3] * 1000000000LL);
        } else {
            PyObject *billion = PyLong_FromLong(1000000000L);
            mtime = billion == NULL ? NULL : PyNumber_Multiply(PyTuple_GET_ITEM(record, 8), billion);
            Py_XDECREF(billion);
        }
        PyObject *stored = Py_None;
        Py_INCREF(stored);
        if (PyUnicode_Compare(kind, file_kind) == 0) {
            if (file >= files) {
                Py_DECREF(stored);
                Py_XDECREF(mtime);
                PyErr_SetString(PyExc_ValueError, "members: fewer digests than files");
                goto fail;
            }
            PyObject *text = PyUnicode_New(64, 127);
            if (text != NULL) {
                Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
                for (int b = 0; b < 32; b++) {
                    chars[2 * b] = (Py_UCS1)hex[digest[32 * file + b] >> 4];
                    chars[2 * b + 1] = (Py_UCS1)hex[digest[32 * file + b] & 15];
                }
            }
            Py_DECREF(stored);
            stored = tuple_of(content, text == NULL ? NULL : Py_BuildValue("(ON)", PyTuple_GET_ITEM(record, 2), text));
            file++;
        }
        PyObject *made = NULL;
        if (mtime != NULL && stored != NULL) {
            made = tuple_of(member, Py_BuildValue("(NOLLLNONOOO)", decoded(PyTuple_GET_ITEM(record, 3)), kind,
                                                  fields[0] & 07777, fields[1], fields[2], mtime, empty_bytes,
                                                  decoded(PyTuple_GET_ITEM(record, 4)), no_device, empty_tuple,
                                                  stored));
            mtime = NULL; /* stolen by the N above */
        }
        Py_XDECREF(mtime);
        Py_XDECREF(stored);
        if (made == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(out, i, made);
    }
    if (file != files) {
        PyErr_SetString(PyExc_ValueError, "members: more digests than files");
        goto fail;
    }
    Py_DECREF(file_kind);
    Py_DECREF(empty_bytes);
    Py_DECREF(empty_tuple);
    PyBuffer_Release(&digests);
    return out;
model:
    Py_XDECREF(file_kind);
    Py_XDECREF(empty_bytes);
    Py_XDECREF(empty_tuple);
    Py_XDECREF(out);
    PyBuffer_Release(&digests);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(file_kind);
    Py_XDECREF(empty_bytes);
    Py_XDECREF(empty_tuple);
    Py_XDECREF(out);
    PyBuffer_Release(&digests);
    return NULL;
}


/* -- decode: a plain layer's value, the model's decode_members in C ----------- */

/* What the model does with a kind (cowspec.layer_tar.decode_members). */
#define KIND_OTHER 0
#define KIND_FILE 1
#define KIND_DIR 2
#define KIND_HARDLINK 3

/* One member of the layer: its normalised path as a canonical key (each '/'
 * written as NUL: sorted by memcmp they come in canonical order), and its
 * entry (NULL for a whiteout or opaque marker). */
typedef struct {
    char *key, *link_key;
    Py_ssize_t key_length, link_length;
    PyObject *entry;
    int kind;
} Item;

/* "/" and the parts of `name` joined by "/", without empty and "." parts,
 * into `out` (room for length + 2); its length, or -1 for a ".." part (the
 * model's clean_name decides those). */
static Py_ssize_t clean_path(const char *name, Py_ssize_t length, char *out) {
    Py_ssize_t used = 1, start = 0;
    out[0] = '/';
    while (start <= length) {
        const char *slash = memchr(name + start, '/', (size_t)(length - start));
        Py_ssize_t end = slash ? slash - name : length;
        Py_ssize_t part = end - start;
        if (part == 2 && name[start] == '.' && name[start + 1] == '.') {
            return -1;
        }
        if (part > 0 && !(part == 1 && name[start] == '.')) {
            if (used > 1) {
                out[used++] = '/';
            }
            memcpy(out + used, name + start, (size_t)part);
            used += part;
        }
        start = end + 1;
    }
    return used;
}

/* A copy of a path with every "/" written as NUL (freed with PyMem_Free). */
static char *key_of(const char *path, Py_ssize_t length) {
    char *key = PyMem_Malloc((size_t)(length ? length : 1));
    if (key != NULL) {
        for (Py_ssize_t i = 0; i < length; i++) {
            key[i] = path[i] == '/' ? '\0' : path[i];
        }
    }
    return key;
}

static int key_compare(const char *a, Py_ssize_t a_length, const char *b, Py_ssize_t b_length) {
    int order = memcmp(a, b, (size_t)(a_length < b_length ? a_length : b_length));
    return order ? order : (a_length > b_length) - (a_length < b_length);
}

static int item_compare(const void *left, const void *right) {
    const Item *a = left, *b = right;
    return key_compare(a->key, a->key_length, b->key, b->key_length);
}

/* A str of valid UTF-8 bytes; NULL without an error set where they are not
 * valid (the model's surrogateescape reading is left to the model). */
static PyObject *strict_text(const char *bytes, Py_ssize_t length, int *invalid) {
    PyObject *text = PyUnicode_DecodeUTF8(bytes, length, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        *invalid = 1;
    }
    return text;
}

/* An instance of a tuple subclass (TarEntry, Content) holding `items` (stolen).
 *
 * Untracked by the cycle collector: its items are strs, ints, bytes, None
 * and tuples of those, none of which can refer back to it, so it can be in
 * no cycle.  Python keeps exact tuples like these out of the collector's
 * way by itself, but never an instance of a subclass: a large layer's
 * hundreds of thousands of entries would otherwise be walked by every
 * full collection, and all at once by the first collection after a
 * command that holds the collector off while it reads. */
static PyObject *made_of(PyTypeObject *type, PyObject **items, Py_ssize_t count) {
    PyObject *made = NULL;
    int complete = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        complete = complete && items[i] != NULL;
    }
    if (complete) {
        made = type->tp_alloc(type, count);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (made != NULL) {
            PyTuple_SET_ITEM(made, i, items[i]);
        } else {
            Py_XDECREF(items[i]);
        }
    }
    if (made != NULL && PyObject_GC_IsTracked(made)) {
        PyObject_GC_UnTrack(made);
    }
    return made;
}

/* decode(buffer, digests, kinds, entry, content, no_device) -> tuple | None
 *
 * The value the model's decode_members gives for a layer framed by frame(),
 * whose files' digests are `digests` (32 bytes each, in archive order), as
 * (entries in canonical order, whiteouts, opaque directories); or None
 * wherever the model has more to say: a type flag `kinds` (type flag ->
 * kind, the model's table without devices) does not name (PAX and long-name
 * records, devices, unknown types), a name or link that is not UTF-8 or has
 * a ".." part, a duplicate, a root that is not a directory, an invalid
 * whiteout, a hardlink whose target is missing, a directory or a hardlink,
 * an entry below a non-directory, an mtime beyond 64 bits of nanoseconds.
 * Every one of those is an error or a rare case the model reads itself. */
static PyObject *decode(PyObject *module, PyObject *args) {
    Py_buffer view, digests;
    PyObject *kinds, *no_device;
    PyTypeObject *entry_type, *content_type;
    if (!PyArg_ParseTuple(args, "y*y*O!O!O!O", &view, &digests, &PyDict_Type, &kinds, &PyType_Type, &entry_type,
                          &PyType_Type, &content_type, &no_device)) {
        return NULL;
    }
    static const char hex[] = "0123456789abcdef";
    PyObject *kind_of[256] = {NULL};
    int code_of[256] = {0};
    Item *items = NULL;
    Py_ssize_t count = 0, room = 0, file = 0, files = digests.len / 32;
    PyObject *result = NULL, *entries = NULL, *whiteouts = NULL, *opaque = NULL;
    PyObject *empty_bytes = PyBytes_FromStringAndSize(NULL, 0), *empty_text = PyUnicode_FromStringAndSize(NULL, 0);
    PyObject *empty_tuple = PyTuple_New(0);
    int model = 0; /* the model reads this layer */
    if (empty_bytes == NULL || empty_text == NULL || empty_tuple == NULL) {
        goto done;
    }
    if (!PyType_IsSubtype(entry_type, &PyTuple_Type) || !PyType_IsSubtype(content_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "decode: entry and content are tuple types");
        goto done;
    }
    {
        PyObject *flag, *kind;
        Py_ssize_t at = 0;
        while (PyDict_Next(kinds, &at, &flag, &kind)) {
            if (!PyBytes_Check(flag) || PyBytes_GET_SIZE(flag) != 1 || !PyUnicode_Check(kind)) {
                PyErr_SetString(PyExc_TypeError, "decode: kinds maps one-byte type flags to kinds");
                goto done;
            }
            uint8_t byte = (uint8_t)PyBytes_AS_STRING(flag)[0];
            kind_of[byte] = kind;
            code_of[byte] = PyUnicode_CompareWithASCIIString(kind, "file") == 0       ? KIND_FILE
                            : PyUnicode_CompareWithASCIIString(kind, "dir") == 0      ? KIND_DIR
                            : PyUnicode_CompareWithASCIIString(kind, "hardlink") == 0 ? KIND_HARDLINK
                                                                                      : KIND_OTHER;
        }
    }
    whiteouts = PyList_New(0);
    opaque = PyList_New(0);
    if (whiteouts == NULL || opaque == NULL) {
        goto done;
    }
    Py_ssize_t position = 0;
    for (;;) {
        Framed framed;
        int found = frame_header(view.buf, view.len, position, &framed);
        if (found == FRAME_END) {
            break;
        }
        const uint8_t *header = (const uint8_t *)view.buf + position;
        PyObject *kind = found == FRAME_HEADER ? kind_of[framed.flag] : NULL;
        if (kind == NULL || framed.mtime > INT64_MAX / 1000000000) {
            model = 1;
            goto done;
        }
        int code = code_of[framed.flag];
        position = framed.next;
        if (count == room) {
            room = room ? 2 * room : 1024;
            Item *more = PyMem_Realloc(items, (size_t)room * sizeof *more);
            if (more == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            items = more;
        }
        Item *item = &items[count];
        memset(item, 0, sizeof *item);
        count++;
        char name[256], path[260];
        Py_ssize_t length = clean_path(name, joined_name(header, name), path);
        if (length < 0) {
            model = 1;
            goto done;
        }
        item->kind = code;
        item->key_length = length;
        if ((item->key = key_of(path, length)) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        PyObject *digest_text = NULL;
        if (code == KIND_FILE) {
            if (file >= files) {
                PyErr_SetString(PyExc_ValueError, "decode: fewer digests than files");
                goto done;
            }
            if ((digest_text = PyUnicode_New(64, 127)) == NULL) {
                goto done;
            }
            Py_UCS1 *chars = PyUnicode_1BYTE_DATA(digest_text);
            const uint8_t *digest = (const uint8_t *)digests.buf + 32 * file++;
            for (int b = 0; b < 32; b++) {
                chars[2 * b] = (Py_UCS1)hex[digest[b] >> 4];
                chars[2 * b + 1] = (Py_UCS1)hex[digest[b] & 15];
            }
        }
        /* A marker: its path is kept (for duplicates), its meaning is a whiteout or an opaque directory. */
        const char *base = path + length;
        while (base[-1] != '/') { /* a path begins with "/" */
            base--;
        }
        Py_ssize_t base_length = path + length - base;
        if (base_length >= 4 && memcmp(base, ".wh.", 4) == 0) {
            Py_XDECREF(digest_text);
            Py_ssize_t parent = base - path - 1; /* the parent's length; 0 for the root */
            PyObject *marked;
            int invalid = 0;
            if (base_length == 12 && memcmp(base, ".wh..wh..opq", 12) == 0) {
                marked = strict_text(parent ? path : "/", parent ? parent : 1, &invalid);
                if (marked == NULL || PyList_Append(opaque, marked) < 0) {
                    Py_XDECREF(marked);
                    model = invalid;
                    goto done;
                }
            } else {
                const char *target = base + 4;
                Py_ssize_t target_length = base_length - 4;
                if (target_length == 0 || (target_length == 1 && target[0] == '.') ||
                    (target_length == 2 && target[0] == '.' && target[1] == '.')) {
                    model = 1;
                    goto done;
                }
                char deleted[260];
                memcpy(deleted, path, (size_t)parent);
                deleted[parent] = '/';
                memcpy(deleted + parent + 1, target, (size_t)target_length);
                marked = strict_text(deleted, parent + 1 + target_length, &invalid);
                if (marked == NULL || PyList_Append(whiteouts, marked) < 0) {
                    Py_XDECREF(marked);
                    model = invalid;
                    goto done;
                }
            }
            Py_DECREF(marked);
            continue;
        }
        int invalid = 0;
        PyObject *fields[11] = {NULL};
        fields[0] = strict_text(path, length, &invalid);
        fields[1] = kind;
        Py_INCREF(kind);
        fields[2] = PyLong_FromLongLong(framed.mode & 07777);
        fields[3] = PyLong_FromLongLong(framed.uid);
        fields[4] = PyLong_FromLongLong(framed.gid);
        fields[5] = PyLong_FromLongLong(framed.mtime * 1000000000LL);
        fields[6] = empty_bytes;
        Py_INCREF(empty_bytes);
        const char *raw_link = (const char *)header + 157;
        Py_ssize_t raw_length = field_length(header + 157, 100);
        if (length == 1) {
            if (code != KIND_DIR) { /* the root can only be a directory */
                model = 1;
            }
            fields[7] = empty_text; /* the model keeps no link for the root */
            Py_INCREF(empty_text);
        } else if (code == KIND_HARDLINK) {
            char link[104];
            Py_ssize_t link_length = clean_path(raw_link, raw_length, link);
            if (link_length < 0) {
                model = 1;
            } else {
                fields[7] = strict_text(link, link_length, &invalid);
                item->link_length = link_length;
                if ((item->link_key = key_of(link, link_length)) == NULL) {
                    PyErr_NoMemory();
                }
            }
        } else {
            fields[7] = strict_text(raw_link, raw_length, &invalid);
        }
        fields[8] = no_device;
        Py_INCREF(no_device);
        fields[9] = empty_tuple;
        Py_INCREF(empty_tuple);
        if (code == KIND_FILE) {
            PyObject *content[2] = {PyLong_FromLongLong(framed.size), digest_text};
            fields[10] = made_of(content_type, content, 2);
        } else {
            fields[10] = Py_None;
            Py_INCREF(Py_None);
        }
        item->entry = made_of(entry_type, fields, 11);
        if (invalid || model || item->entry == NULL || PyErr_Occurred()) {
            model = model || invalid;
            goto done;
        }
    }
    if (file != files) {
        PyErr_SetString(PyExc_ValueError, "decode: more digests than files");
        goto done;
    }
    qsort(items, (size_t)count, sizeof *items, item_compare);
    /* Entries only, in order; a duplicate path (markers included) is the model's to refuse. */
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i && key_compare(items[i].key, items[i].key_length, items[i - 1].key, items[i - 1].key_length) == 0) {
            model = 1;
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (items[i].entry != NULL) {
            Item swap = items[kept];
            items[kept++] = items[i];
            items[i] = swap;
        }
    }
    for (Py_ssize_t i = 0; i < kept; i++) {
        /* Nothing of the layer below a non-directory of it [TAR-6]. */
        if (i + 1 < kept && items[i].kind != KIND_DIR && items[i + 1].key_length > items[i].key_length &&
            memcmp(items[i + 1].key, items[i].key, (size_t)items[i].key_length) == 0 &&
            items[i + 1].key[items[i].key_length] == '\0') {
            model = 1;
            goto done;
        }
        /* A hardlink names a file, symlink or other non-directory of its own layer [TAR-3]. */
        if (items[i].kind == KIND_HARDLINK) {
            Py_ssize_t low = 0, high = kept;
            while (low < high) {
                Py_ssize_t middle = (low + high) / 2;
                if (key_compare(items[middle].key, items[middle].key_length, items[i].link_key,
                                items[i].link_length) < 0) {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            if (low == kept ||
                key_compare(items[low].key, items[low].key_length, items[i].link_key, items[i].link_length) ||
                items[low].kind == KIND_DIR || items[low].kind == KIND_HARDLINK) {
                model = 1;
                goto done;
            }
        }
    }
    if ((entries = PyTuple_New(kept)) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < kept; i++) {
        PyTuple_SET_ITEM(entries, i, items[i].entry);
        items[i].entry = NULL;
    }
    result = PyTuple_Pack(3, entries, whiteouts, opaque);
done:
    for (Py_ssize_t i = 0; i < count; i++) {
        PyMem_Free(items[i].key);
        PyMem_Free(items[i].link_key);
        Py_XDECREF(items[i].entry);
    }
    PyMem_Free(items);
    Py_XDECREF(entries);
    Py_XDECREF(whiteouts);
    Py_XDECREF(opaque);
    Py_XDECREF(empty_bytes);
    Py_XDECREF(empty_text);
    Py_XDECREF(empty_tuple);
    PyBuffer_Release(&view);
    PyBuffer_Release(&digests);
    if (model && result == NULL && !PyErr_Occurred()) {
        Py_RETURN_NONE;
    }
    return result;
}

/* -- the JSON of a root filesystem ------------------------------------------ */

typedef struct {
    char *data;
    size_t length, room;
} Text;

static int text_room(Text *text, size_t more) {
    if (text->length + more <= text->room) {
        return 0;
    }
    size_t room = text->room ? text->room : 1 << 16;
    while (room < text->length + more) {
        room *= 2;
    }
    char *grown = PyMem_Realloc(text->data, room);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    text->data = grown;
    text->room = room;
    return 0;
}

static int text_add(Text *text, const char *bytes, size_t count) {
    if (text_room(text, count) < 0) {
        return -1;
    }
    memcpy(text->data + text->length, bytes, count);
    text->length += count;
    return 0;
}

#define TEXT_ADD(text, literal) text_add((text), (literal), sizeof(literal) - 1)

static void escape_unit(char *out, unsigned int unit) {
    static const char hex[] = "0123456789abcdef";
    out[0] = '\\';
    out[1] = 'u';
    out[2] = hex[(unit >> 12) & 15];
    out[3] = hex[(unit >> 8) & 15];
    out[4] = hex[(unit >> 4) & 15];
    out[5] = hex[unit & 15];
}

/* A string as json's encode_basestring_ascii writes it: quoted, ASCII only. */
static int text_string(Text *text, PyObject *string) {
    if (string == NULL) {
        return -1;
    }
    if (!PyUnicode_Check(string)) {
        PyErr_SetString(PyExc_TypeError, "entries_json: a name or target is not a str");
        return -1;
    }
    Py_ssize_t count = PyUnicode_GET_LENGTH(string);
    int kind = PyUnicode_KIND(string);
    const void *chars = PyUnicode_DATA(string);
    if (text_room(text, 2 + 12 * (size_t)count) < 0) {
        return -1;
    }
    char *out = text->data + text->length;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, chars, i);
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '\\': *out++ = '\\'; continue;
        case '"': *out++ = '"'; continue;
        case '\b': *out++ = 'b'; continue;
        case '\f': *out++ = 'f'; continue;
        case '\n': *out++ = 'n'; continue;
        case '\r': *out++ = 'r'; continue;
        case '\t': *out++ = 't'; continue;
        default: break;
        }
        out--;
        if (c >= 0x10000) {
            Py_UCS4 v = c - 0x10000;
            escape_unit(out, 0xd800 | ((v >> 10) & 0x3ff));
            escape_unit(out + 6, 0xdc00 | (v & 0x3ff));
            out += 12;
        } else {
            escape_unit(out, (unsigned int)c);
            out += 6;
        }
    }
    *out++ = '"';
    text->length = (size_t)(out - text->data);
    return 0;
}

/* An integer as str() writes it. */
static int text_number(Text *text, PyObject *number) {
    if (number == NULL) {
        return -1;
    }
    int overflow = 0;
    long long value = PyLong_Check(number) ? PyLong_AsLongLongAndOverflow(number, &overflow) : 0;
    if (PyLong_Check(number) && !overflow && !(value == -1 && PyErr_Occurred())) {
        char digits[24];
        char *end = digits + sizeof digits, *start = end;
        unsigned long long left = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
        do {
            *--start = (char)('0' + left % 10);
            left /= 10;
        } while (left);
        if (value < 0) {
            *--start = '-';
        }
        return text_add(text, start, (size_t)(end - start));
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *shown = PyObject_Str(number); /* beyond 64 bits, or an int subclass */
    if (shown == NULL) {
        return -1;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(shown, &size);
    int result = utf8 == NULL ? -1 : text_add(text, utf8, (size_t)size);
    Py_DECREF(shown);
    return result;
}

/* A field of an entry that must be a tuple of at least `size` items. */
static PyObject *item(PyObject *tuple, Py_ssize_t index) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) <= index) {
        PyErr_SetString(PyExc_TypeError, "entries_json: an entry is not a TarEntry");
        return NULL;
    }
    return PyTuple_GET_ITEM(tuple, index);
}

static int text_entry(Text *text, PyObject *entry, PyObject *inode, PyObject *names) {
    PyObject *path = item(entry, 0), *kind = item(entry, 1);
    if (path == NULL || kind == NULL || !PyUnicode_Check(kind)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "entries_json: an entry's kind is not a str");
        }
        return -1;
    }
    const char *type = PyUnicode_AsUTF8(kind);
    if (type == NULL || TEXT_ADD(text, "{\"path\":") < 0 || text_string(text, path) < 0 ||
        TEXT_ADD(text, ",\"type\":\"") < 0 || text_add(text, type, strlen(type)) < 0 ||
        TEXT_ADD(text, "\",\"uid\":") < 0 || text_number(text, item(entry, 3)) < 0 ||
        TEXT_ADD(text, ",\"gid\":") < 0 || text_number(text, item(entry, 4)) < 0) {
        return -1;
    }
    if (strcmp(type, "symlink") == 0) {
        if (TEXT_ADD(text, ",\"target\":") < 0 || text_string(text, item(entry, 7)) < 0) {
            return -1;
        }
        return TEXT_ADD(text, "}");
    }
    if (TEXT_ADD(text, ",\"mode\":") < 0 || text_number(text, item(entry, 2)) < 0) {
        return -1;
    }
    if (strcmp(type, "char") == 0 || strcmp(type, "block") == 0) {
        PyObject *device = item(entry, 8);
        if (device == NULL || TEXT_ADD(text, ",\"device\":[") < 0 || text_number(text, item(device, 0)) < 0 ||
            TEXT_ADD(text, ",") < 0 || text_number(text, item(device, 1)) < 0 || TEXT_ADD(text, "]") < 0) {
            return -1;
        }
    } else if (strcmp(type, "file") == 0) {
        /* size and sha256 are the entry's properties: Content's when its bytes were not kept */
        PyObject *content = item(entry, 10), *size, *digest;
        if (content != NULL && PyTuple_Check(content) && PyTuple_GET_SIZE(content) == 2) {
            size = PyTuple_GET_ITEM(content, 0);
            digest = PyTuple_GET_ITEM(content, 1);
            Py_INCREF(size);
            Py_INCREF(digest);
        } else {
            size = content == NULL ? NULL : PyObject_GetAttrString(entry, "size");
            digest = size == NULL ? NULL : PyObject_GetAttrString(entry, "sha256");
        }
        PyObject *number = PyObject_GetItem(inode, path);
        PyObject *count = number == NULL ? NULL : PyObject_GetItem(names, number);
        int result = count == NULL || TEXT_ADD(text, ",\"size\":") < 0 || text_number(text, size) < 0 ||
                             TEXT_ADD(text, ",\"sha256\":") < 0 || text_string(text, digest) < 0 ||
                             TEXT_ADD(text, ",\"nlink\":") < 0 || text_number(text, count) < 0
                         ? -1
                         : 0;
        Py_XDECREF(size);
        Py_XDECREF(digest);
        Py_XDECREF(number);
        Py_XDECREF(count);
        if (result < 0) {
            return -1;
        }
    }
    return TEXT_ADD(text, "}");
}

static PyObject *entries_json(PyObject *module, PyObject *args) {
    PyObject *entries, *inode, *names;
    if (!PyArg_ParseTuple(args, "O!OO", &PyTuple_Type, &entries, &inode, &names)) {
        return NULL;
    }
    Text text = {NULL, 0, 0};
    if (TEXT_ADD(&text, "[") < 0) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(entries); i++) {
        if ((i && TEXT_ADD(&text, ",") < 0) || text_entry(&text, PyTuple_GET_ITEM(entries, i), inode, names) < 0) {
            goto fail;
        }
    }
    if (TEXT_ADD(&text, "]") < 0) {
        goto fail;
    }
    PyObject *result = PyUnicode_DecodeASCII(text.data, (Py_ssize_t)text.length, "strict");
    PyMem_Free(text.data);
    return result;
fail:
    PyMem_Free(text.data);
    return NULL;
}


static PyMethodDef methods[] = {
    {"sha256_many", (PyCFunction)(void (*)(void))sha256_many, METH_VARARGS | METH_KEYWORDS,
     "sha256_many(buffers, backend='openssl', long_count=0, threads=1)\n"
     "-> list[bytes]: the SHA-256 of each buffer."},
    {"multi_buffer", multi_buffer, METH_NOARGS, "multi_buffer() -> bool: whether this CPU runs the multibuffer backend (AVX-512)."},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_VARARGS | METH_KEYWORDS,
     "scan(buffer) -> list[tuple] | int: the headers of an uncompressed tar."},
    {"entries_json", entries_json, METH_VARARGS,
     "entries_json(entries, inode, names) -> str: a root filesystem's entries as cowspec flatten writes them."},
    {"frame", frame, METH_VARARGS,
     "frame(buffer, file_flags) -> bytes | int: the (offset, size) of each file of an uncompressed tar, or where\n"
     "scan() would stop vouching."},
    {"decode", decode, METH_VARARGS,
     "decode(buffer, digests, kinds, entry, content, no_device) -> tuple | None: a plain layer's\n"
     "(entries, whiteouts, opaque), as the model decodes it; None where the model must read it."},
    {"members", (PyCFunction)(void (*)(void))members, METH_VARARGS | METH_KEYWORDS,
     "members(records, digests, member, content, kinds, no_device) -> list | None:\n"
     "the members of plain records (None if any needs the model's reading)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cowcheck._fastlayer",
    .m_doc = "Hashing, tar framing and the JSON of a root filesystem, for large images, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastlayer(void) {
    if (PyType_Ready(&HasherType) < 0) {
        return NULL;
    }
    PyObject *created = PyModule_Create(&module);
    if (created == NULL) {
        return NULL;
    }
    Py_INCREF(&HasherType);
    if (PyModule_AddObject(created, "Hasher", (PyObject *)&HasherType) < 0) {
        Py_DECREF(&HasherType);
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
