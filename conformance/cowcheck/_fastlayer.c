/*
 * cowcheck._fastlayer: the two hot loops of reading a large uncompressed
 * layer, in C.  Nothing here decides what a layer means; the model
 * (cowspec.layer_tar) does, and the tests hold this module to it.
 *
 *   Hasher(threads=1, long_lanes=8, portable=False, release=False)
 *       Native threads that hash buffers as they are added, and keep the
 *       digests.  With AVX-512 each thread hashes sixteen buffers at a time,
 *       one per 32-bit lane ("multi-buffer"): on a core without SHA
 *       instructions, several times faster than one stream at a time.
 *       add(buffers, long=False) -> index of the first one added
 *           Long buffers (whole layers) hold at most long_lanes lanes of a
 *           thread while short ones (files) may still come, so that short
 *           ones finish in the order they were added as the long ones go.
 *       close()              no more buffers will come
 *       wait(first, end)     until buffers [first, end) are hashed (GIL released)
 *       digests(first, end)  their digests, 32 bytes each, end to end
 *       join()               close, and wait for the threads to finish
 *       cancel()             stop now, join, and let go of every buffer
 *       With release, every buffer must lie in a read-only file mapping:
 *       pages are let go (madvise MADV_DONTNEED) once hashed, so that the
 *       process does not hold a whole image in memory.
 *
 *   sha256_many(buffers, portable=False, long_count=0, long_lanes=8,
 *               threads=1, release=False) -> list[bytes]
 *       The same, all at once: the first long_count buffers are long.
 *
 *   scan(buffer, release=False) -> list[tuple] | int
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


/* -- one job: a buffer and its digest -------------------------------------- */

typedef struct {
    const uint8_t *data;
    Py_ssize_t length;
    Py_buffer view; /* held while the job lives */
    uint8_t digest[32];
    uint8_t is_long, done;
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


/* -- the queue of jobs, shared by the worker threads ------------------------ */

#define CHUNK_JOBS 4096
#define SPAN_GAP (64 << 10)

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
    int closed, long_lanes, release;
    volatile int cancelled; /* stop now: nobody wants the rest */
    /* For release: the first short job not yet hashed, and the span of
     * bytes behind it not yet let go. */
    Py_ssize_t low;
    const uint8_t *span;
    Py_ssize_t span_length;
} Queue;

static void queue_init(Queue *queue, int long_lanes, int release) {
    memset(queue, 0, sizeof *queue);
    pthread_mutex_init(&queue->lock, NULL);
    pthread_cond_init(&queue->wake, NULL);
    pthread_cond_init(&queue->finished, NULL);
    queue->long_lanes = long_lanes;
    queue->release = release;
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

/* Short jobs finish nearly in order, and their buffers lie nearly in order
 * in a mapping, headers between them: let go of what lies behind the first
 * unfinished one, a few megabytes at a time (lock held). */
static void release_behind(Queue *queue, int flush) {
    while (queue->low < queue->short_count && job_at(queue, queue->shorts[queue->low])->done) {
        const Job *passed = job_at(queue, queue->shorts[queue->low++]);
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

/* The next job for a worker that has `*on_long` lanes on long jobs (lock
 * held): a long one while it has lanes to spare for them, or when no short
 * one is left or can come; else the next short one.  NULL if none now. */
static Job *next_job(Queue *queue, int *on_long) {
    int long_left = queue->next_long < queue->long_count;
    int short_left = queue->next_short < queue->short_count;
    if (long_left && (*on_long < queue->long_lanes || (!short_left && queue->closed))) {
        ++*on_long;
        return job_at(queue, queue->longs[queue->next_long++]);
    }
    if (short_left) {
        return job_at(queue, queue->shorts[queue->next_short++]);
    }
    return NULL;
}

/* Fill `idle` empty slots with jobs; with `block`, wait for at least one
 * unless the queue is closed and empty.  How many were filled. */
static int take_jobs(Queue *queue, Job **slots, int slot_count, int *on_long, int block) {
    int filled = 0;
    pthread_mutex_lock(&queue->lock);
    while (!queue->cancelled) {
        for (int slot = 0; slot < slot_count; slot++) {
            if (slots[slot] == NULL && (slots[slot] = next_job(queue, on_long)) != NULL) {
                filled++;
            }
        }
        int more_may_come = !queue->closed || queue->next_long < queue->long_count;
        if (filled || !block || !more_may_come) {
            break;
        }
        pthread_cond_wait(&queue->wake, &queue->lock);
    }
    pthread_mutex_unlock(&queue->lock);
    return filled;
}

static void job_done(Queue *queue, Job *job, int *on_long) {
    if (queue->release && job->is_long) {
        release_pages(job->data, job->length);
    }
    pthread_mutex_lock(&queue->lock);
    job->done = 1;
    if (job->is_long) {
        --*on_long;
    } else if (queue->release) {
        release_behind(queue, 0);
    }
    pthread_cond_broadcast(&queue->finished);
    pthread_mutex_unlock(&queue->lock);
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
    Job *slot[1] = {NULL};
    while (take_jobs(queue, slot, 1, &on_long, 1)) {
        Job *job = slot[0];
        Cursor cursor;
        uint32_t state[8];
        const uint8_t *block;
        memcpy(state, IV256, sizeof state);
        cursor_start(&cursor, job);
        while ((block = cursor_next(&cursor)) != NULL && !queue->cancelled) {
            compress_one(state, block);
            if (queue->release && job->is_long) {
                cursor_release(&cursor);
            }
        }
        if (queue->cancelled) {
            return;
        }
        put_digest(job->digest, state);
        job_done(queue, job, &on_long);
        slot[0] = NULL;
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


TARGET static void hash_lanes(Queue *queue) {
    static const uint8_t idle_block[64];
    Job *held[LANES] = {NULL};
    Cursor cursors[LANES];
    const uint8_t *blocks[LANES];
    uint32_t words[8][LANES] __attribute__((aligned(64)));
    __m512i state[8];
    int on_long = 0, running = 0;

    while (!queue->cancelled) {
        /* Idle lanes take jobs; with none running, wait for one. */
        if (running < LANES) {
            Job *before[LANES];
            memcpy(before, held, sizeof held);
            running += take_jobs(queue, held, LANES, &on_long, running == 0);
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
            if (queue->release && held[lane] != NULL && held[lane]->is_long) {
                cursor_release(&cursors[lane]);
            }
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
            job_done(queue, held[lane], &on_long);
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
static void hash_lanes(Queue *queue) { hash_portable(queue); }
#endif

/* -- worker threads -------------------------------------------------------- */

typedef struct {
    Queue *queue;
    int lanes;
} Worker;

static void *work(void *argument) {
    Worker *worker = argument;
    if (worker->lanes) {
        hash_lanes(worker->queue);
    } else {
        hash_portable(worker->queue);
    }
    return NULL;
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
    Worker worker;
    pthread_t threads[MAX_THREADS];
    int thread_count, joined;
} Hasher;

static int Hasher_init(Hasher *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"threads", "long_lanes", "portable", "release", NULL};
    int threads = 1, long_lanes = 8, portable = 0, release = 0;
    if (self->worker.queue != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Hasher: already started");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|iipp", keywords, &threads, &long_lanes, &portable, &release)) {
        return -1;
    }
    if (threads < 1 || threads > MAX_THREADS || long_lanes < 1) {
        PyErr_SetString(PyExc_ValueError, "Hasher: threads or long_lanes out of range");
        return -1;
    }
    queue_init(&self->queue, long_lanes, release);
    self->worker.queue = &self->queue;
    self->worker.lanes = !portable && have_lanes();
    while (self->thread_count < threads &&
           pthread_create(&self->threads[self->thread_count], NULL, work, &self->worker) == 0) {
        self->thread_count++;
    }
    if (self->thread_count == 0) {
        PyErr_SetString(PyExc_OSError, "Hasher: cannot start a thread");
        return -1;
    }
    return 0;
}

static int Hasher_started(Hasher *self) {
    if (self->worker.queue == NULL) {
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

static void Hasher_stop(Hasher *self) {
    if (self->worker.queue == NULL || self->joined) {
        return;
    }
    queue_close(&self->queue);
    Py_BEGIN_ALLOW_THREADS;
    for (int i = 0; i < self->thread_count; i++) {
        pthread_join(self->threads[i], NULL);
    }
    if (self->queue.release) {
        pthread_mutex_lock(&self->queue.lock);
        release_behind(&self->queue, 1);
        pthread_mutex_unlock(&self->queue.lock);
    }
    Py_END_ALLOW_THREADS;
    self->joined = 1;
}

static PyObject *Hasher_cancel(Hasher *self, PyObject *unused) {
    if (!Hasher_started(self)) {
        return NULL;
    }
    pthread_mutex_lock(&self->queue.lock);
    self->queue.cancelled = 1;
    self->queue.closed = 1;
    pthread_cond_broadcast(&self->queue.wake);
    pthread_cond_broadcast(&self->queue.finished);
    pthread_mutex_unlock(&self->queue.lock);
    Hasher_stop(self);
    /* Nothing will be asked of it again: let go of the buffers now, not
     * whenever the last reference goes. */
    queue_free(&self->queue);
    self->worker.queue = NULL;
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
        if (!job->done) {
            pthread_mutex_unlock(&self->queue.lock);
            Py_DECREF(result);
            PyErr_SetString(PyExc_ValueError, "Hasher: a buffer is not hashed yet (wait first)");
            return NULL;
        }
        memcpy(out + 32 * (index - first), job->digest, 32);
    }
    pthread_mutex_unlock(&self->queue.lock);
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
    if (self->worker.queue != NULL) {
        queue_free(&self->queue);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Hasher_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Hasher_add, METH_VARARGS | METH_KEYWORDS,
     "add(buffers, long=False) -> int: hash these too; the index of the first."},
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
    .tp_doc = "Hasher(threads=1, long_lanes=8, portable=False, release=False): threads that hash buffers.",
    .tp_basicsize = sizeof(Hasher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hasher_init,
    .tp_dealloc = (destructor)Hasher_dealloc,
    .tp_methods = Hasher_methods,
};

/* -- sha256_many ---------------------------------------------------------- */

static PyObject *sha256_many(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buffers", "portable", "long_count", "long_lanes", "threads", "release", NULL};
    PyObject *buffers;
    int portable = 0, long_lanes = 8, threads = 1, release = 0;
    Py_ssize_t long_count = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pniip", keywords, &buffers, &portable, &long_count,
                                     &long_lanes, &threads, &release)) {
        return NULL;
    }
    PyObject *sequence = PySequence_Fast(buffers, "sha256_many: buffers must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    if (long_count < 0 || long_count > count || long_lanes < 1 || threads < 1 || threads > MAX_THREADS) {
        Py_DECREF(sequence);
        PyErr_SetString(PyExc_ValueError, "sha256_many: long_count, long_lanes or threads out of range");
        return NULL;
    }
    PyObject *longs = PySequence_GetSlice(sequence, 0, long_count);
    PyObject *shorts = PySequence_GetSlice(sequence, long_count, count);
    Py_DECREF(sequence);
    Queue queue;
    queue_init(&queue, long_lanes, release);
    Worker worker = {&queue, !portable && have_lanes()};
    PyObject *result = NULL;
    Py_ssize_t start = longs == NULL || shorts == NULL ? -1 : add_buffers(&queue, longs, 1);
    if (start >= 0) {
        start = add_buffers(&queue, shorts, 0);
    }
    Py_XDECREF(longs);
    Py_XDECREF(shorts);
    if (start >= 0) {
        queue.closed = 1;
        pthread_t started[MAX_THREADS];
        int running = 0;
        Py_BEGIN_ALLOW_THREADS;
        while (running + 1 < threads && pthread_create(&started[running], NULL, work, &worker) == 0) {
            running++;
        }
        work(&worker);
        for (int i = 0; i < running; i++) {
            pthread_join(started[i], NULL);
        }
        if (release) {
            release_behind(&queue, 1);
        }
        Py_END_ALLOW_THREADS;
        result = PyList_New(count);
        for (Py_ssize_t index = 0; result != NULL && index < count; index++) {
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
     "sha256_many(buffers, portable=False, long_count=0, long_lanes=8, threads=1, release=False)\n"
     "-> list[bytes]: the SHA-256 of each buffer."},
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
