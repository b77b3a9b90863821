/*
 * overlay-driver.c: the Linux kernel's overlayfs as a cowspec-driver/1 program.
 *
 * cowspec starts this program once and talks to it in JSON Lines: one request
 * object per line on standard input, one reply object per line on standard
 * output (docs/formats/driver-protocol.md). It serves the *filesystem* level:
 * a session lays the layers of a trace out on disk the way Docker's overlay2
 * driver stores them, mounts the kernel's overlayfs over them with an empty
 * upper directory, performs each op as the real system call, and reports the
 * merged tree, the upper directory and Docker's sizes.
 *
 * It does exactly what cowspec's own Python driver does
 * (conformance/cowcheck/drivers/kernel_overlay.py), so that the two agree on
 * every trace:
 *
 *   - layers: one directory per layer; whiteouts are 0/0 character devices,
 *     opaque directories carry trusted.overlay.opaque=y; modes and owners are
 *     set after the contents, directories last and deepest first;
 *   - ops run in a forked child that has chroot()ed into the merged directory,
 *     with umask 0, so that a symlink to an absolute path resolves inside the
 *     container root, as in a container; the parent forwards each op to the
 *     child over a pipe, one JSON line each way;
 *   - the merged tree is walked by that child from inside; the upper
 *     directory and the sizes are read by the parent from the host side, as
 *     Docker does.
 *
 * The program works in a private mount namespace (unshare(CLONE_NEWNS), "/"
 * made private) with a tmpfs over /tmp, so nothing it mounts or writes is
 * visible outside, and a crash leaves nothing behind. It dies with its parent
 * (PR_SET_PDEATHSIG). It needs root.
 *
 * A bug can be planted on purpose with --bug=NAME, to see cowspec find it:
 *
 *   --bug=rmdir-checks-lower   rmdir asks the image's copies of a directory
 *                              whether it is empty, not the merged view: a
 *                              directory whose image entries were all deleted
 *                              answers ENOTEMPTY.
 *   --bug=size-counts-links    the sizes count a file once for each of its
 *                              hardlinks, where Docker counts each inode once.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -o overlay-driver overlay-driver.c
 * (plain libc; JSON, base64 and SHA-256 are written out below).
 */

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PROTOCOL "cowspec-driver/1"
#define DRIVER_NAME "c-overlay"
#define DRIVER_VERSION "1.0"
#define SCRATCH "/tmp/cowspec-overlay-driver" /* on our own tmpfs, in our own mount namespace */
#define OPAQUE_XATTR "trusted.overlay.opaque"
#define MAX_ID 4294967294LL  /* uid and gid: 2^32 - 2 */
#define MAX_OFFSET 16777216LL /* offsets and sizes: 2^24, as cowspec-trace/1 allows */
#define MAX_DEPTH 64          /* JSON nesting we accept; deeper input is refused, not a stack overflow */

/* The planted bugs, off unless asked for on the command line (--bug=NAME). */
static bool bug_rmdir_checks_lower = false;
static bool bug_size_counts_links = false;

static const struct {
    const char *name;
    bool *on;
    const char *what;
} BUGS[] = {
    {"rmdir-checks-lower", &bug_rmdir_checks_lower,
     "rmdir asks the image's copies of a directory, not the merged view, whether it is empty"},
    {"size-counts-links", &bug_size_counts_links, "sizes count a file once per hardlink, not once per inode"},
};
#define BUG_COUNT (sizeof BUGS / sizeof BUGS[0])

/* -- small helpers ------------------------------------------------------------------------------ */

/* The one-line reason of the last failure; functions that fail set it and return false or NULL. */
static char failure[1024];

static bool fail(const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(failure, sizeof failure, format, arguments);
    va_end(arguments);
    return false;
}

/* Running out of memory is not something a request can cause; give up loudly. */
static void *allocate(void *old, size_t size) {
    void *memory = realloc(old, size ? size : 1);
    if (memory == NULL) {
        fputs("overlay-driver: out of memory\n", stderr);
        exit(1);
    }
    return memory;
}

static char *copy_text(const char *text) {
    size_t length = strlen(text) + 1;
    return memcpy(allocate(NULL, length), text, length);
}

/* A growable byte string, always NUL-terminated. */
typedef struct {
    char *data;
    size_t length, capacity;
} Buffer;

static void buffer_add(Buffer *buffer, const void *bytes, size_t count) {
    if (buffer->length + count + 1 > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 256;
        while (capacity < buffer->length + count + 1)
            capacity *= 2;
        buffer->data = allocate(buffer->data, capacity);
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->length, bytes, count);
    buffer->length += count;
    buffer->data[buffer->length] = '\0';
}

static void buffer_text(Buffer *buffer, const char *text) { buffer_add(buffer, text, strlen(text)); }

static void buffer_format(Buffer *buffer, const char *format, ...) {
    char small[256];
    va_list arguments;
    va_start(arguments, format);
    int length = vsnprintf(small, sizeof small, format, arguments);
    va_end(arguments);
    if (length < 0)
        return;
    if ((size_t)length < sizeof small) {
        buffer_add(buffer, small, (size_t)length);
        return;
    }
    char *large = allocate(NULL, (size_t)length + 1);
    va_start(arguments, format);
    vsnprintf(large, (size_t)length + 1, format, arguments);
    va_end(arguments);
    buffer_add(buffer, large, (size_t)length);
    free(large);
}

/* "directory/name", or "/name" when the directory is the root. */
static char *join_path(const char *directory, const char *name) {
    Buffer path = {0};
    buffer_text(&path, directory);
    if (path.length == 0 || path.data[path.length - 1] != '/')
        buffer_text(&path, "/");
    buffer_text(&path, name);
    return path.data;
}

/* -- JSON --------------------------------------------------------------------------------------- */

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

/* A parsed JSON value. Object members are items with a key. */
typedef struct Json {
    JsonType type;
    bool boolean;
    bool integral;     /* a number written without fraction or exponent, that fits a long long */
    long long integer; /* its value */
    char *string;      /* strings: the decoded UTF-8 bytes, NUL-terminated */
    size_t length;     /* and their length (a string may hold \u0000) */
    struct Json *items;
    size_t count;
    char *key; /* an object member's name */
} Json;

typedef struct {
    const char *at, *end;
} Parser;

static void json_free(Json *value) {
    for (size_t index = 0; index < value->count; index++)
        json_free(&value->items[index]);
    free(value->items);
    free(value->string);
    free(value->key);
    memset(value, 0, sizeof *value);
}

static void skip_space(Parser *parser) {
    while (parser->at < parser->end &&
           (*parser->at == ' ' || *parser->at == '\t' || *parser->at == '\n' || *parser->at == '\r'))
        parser->at++;
}

static int hex_digit(char digit) {
    if (digit >= '0' && digit <= '9')
        return digit - '0';
    if (digit >= 'a' && digit <= 'f')
        return digit - 'a' + 10;
    if (digit >= 'A' && digit <= 'F')
        return digit - 'A' + 10;
    return -1;
}

static bool read_hex4(Parser *parser, unsigned *out) {
    if (parser->end - parser->at < 4)
        return fail("truncated \\u escape");
    unsigned value = 0;
    for (int index = 0; index < 4; index++) {
        int digit = hex_digit(parser->at[index]);
        if (digit < 0)
            return fail("bad \\u escape");
        value = value * 16 + (unsigned)digit;
    }
    parser->at += 4;
    *out = value;
    return true;
}

static void add_utf8(Buffer *buffer, unsigned code) {
    unsigned char bytes[4];
    size_t count;
    if (code < 0x80) {
        bytes[0] = (unsigned char)code;
        count = 1;
    } else if (code < 0x800) {
        bytes[0] = (unsigned char)(0xC0 | (code >> 6));
        bytes[1] = (unsigned char)(0x80 | (code & 0x3F));
        count = 2;
    } else if (code < 0x10000) {
        bytes[0] = (unsigned char)(0xE0 | (code >> 12));
        bytes[1] = (unsigned char)(0x80 | ((code >> 6) & 0x3F));
        bytes[2] = (unsigned char)(0x80 | (code & 0x3F));
        count = 3;
    } else {
        bytes[0] = (unsigned char)(0xF0 | (code >> 18));
        bytes[1] = (unsigned char)(0x80 | ((code >> 12) & 0x3F));
        bytes[2] = (unsigned char)(0x80 | ((code >> 6) & 0x3F));
        bytes[3] = (unsigned char)(0x80 | (code & 0x3F));
        count = 4;
    }
    buffer_add(buffer, bytes, count);
}

/* A string after its opening quote; the decoded bytes go to ``out``. */
static bool parse_string(Parser *parser, char **out, size_t *length) {
    Buffer text = {0};
    buffer_add(&text, "", 0);
    while (true) {
        if (parser->at >= parser->end) {
            free(text.data);
            return fail("unterminated string");
        }
        unsigned char next = (unsigned char)*parser->at++;
        if (next == '"')
            break;
        if (next < 0x20) {
            free(text.data);
            return fail("control character in a string");
        }
        if (next != '\\') {
            buffer_add(&text, &next, 1);
            continue;
        }
        if (parser->at >= parser->end) {
            free(text.data);
            return fail("unterminated string");
        }
        char escape = *parser->at++;
        const char *plain = strchr("\"\\/bfnrt", escape);
        if (escape != '\0' && plain != NULL) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            buffer_add(&text, &decoded[plain - "\"\\/bfnrt"], 1);
            continue;
        }
        unsigned code, low;
        if (escape != 'u' || !read_hex4(parser, &code)) {
            free(text.data);
            return escape == 'u' ? false : fail("bad escape in a string");
        }
        if (code >= 0xD800 && code <= 0xDBFF) { /* a surrogate pair makes one code point */
            if (parser->end - parser->at < 2 || parser->at[0] != '\\' || parser->at[1] != 'u') {
                free(text.data);
                return fail("lone surrogate in a string");
            }
            parser->at += 2;
            if (!read_hex4(parser, &low) || low < 0xDC00 || low > 0xDFFF) {
                free(text.data);
                return fail("lone surrogate in a string");
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
        } else if (code >= 0xDC00 && code <= 0xDFFF) {
            free(text.data);
            return fail("lone surrogate in a string");
        }
        add_utf8(&text, code);
    }
    *out = text.data;
    *length = text.length;
    return true;
}

static bool parse_value(Parser *parser, Json *value, int depth);

/* The items of an array or object after its opening bracket. */
static bool parse_items(Parser *parser, Json *value, char closing, int depth) {
    skip_space(parser);
    if (parser->at < parser->end && *parser->at == closing) {
        parser->at++;
        return true;
    }
    while (true) {
        value->items = allocate(value->items, (value->count + 1) * sizeof(Json));
        Json *item = &value->items[value->count];
        memset(item, 0, sizeof *item);
        value->count++;
        skip_space(parser);
        if (closing == '}') {
            size_t ignored;
            if (parser->at >= parser->end || *parser->at != '"')
                return fail("expected a member name");
            parser->at++;
            if (!parse_string(parser, &item->key, &ignored))
                return false;
            skip_space(parser);
            if (parser->at >= parser->end || *parser->at != ':')
                return fail("expected ':'");
            parser->at++;
        }
        if (!parse_value(parser, item, depth + 1))
            return false;
        skip_space(parser);
        if (parser->at < parser->end && *parser->at == ',') {
            parser->at++;
            continue;
        }
        if (parser->at < parser->end && *parser->at == closing) {
            parser->at++;
            return true;
        }
        return fail("expected ',' or '%c'", closing);
    }
}

static bool parse_number(Parser *parser, Json *value) {
    const char *start = parser->at;
    bool integral = true;
    if (parser->at < parser->end && *parser->at == '-')
        parser->at++;
    if (parser->at >= parser->end || *parser->at < '0' || *parser->at > '9')
        return fail("bad number");
    if (*parser->at == '0')
        parser->at++;
    else
        while (parser->at < parser->end && *parser->at >= '0' && *parser->at <= '9')
            parser->at++;
    if (parser->at < parser->end && *parser->at == '.') {
        integral = false;
        parser->at++;
        if (parser->at >= parser->end || *parser->at < '0' || *parser->at > '9')
            return fail("bad number");
        while (parser->at < parser->end && *parser->at >= '0' && *parser->at <= '9')
            parser->at++;
    }
    if (parser->at < parser->end && (*parser->at == 'e' || *parser->at == 'E')) {
        integral = false;
        parser->at++;
        if (parser->at < parser->end && (*parser->at == '+' || *parser->at == '-'))
            parser->at++;
        if (parser->at >= parser->end || *parser->at < '0' || *parser->at > '9')
            return fail("bad number");
        while (parser->at < parser->end && *parser->at >= '0' && *parser->at <= '9')
            parser->at++;
    }
    value->type = JSON_NUMBER;
    if (integral) {
        char digits[32];
        size_t count = (size_t)(parser->at - start);
        if (count < sizeof digits) { /* longer than any long long: not usable as an integer here */
            memcpy(digits, start, count);
            digits[count] = '\0';
            errno = 0;
            value->integer = strtoll(digits, NULL, 10);
            value->integral = errno == 0;
        }
    }
    return true;
}

static bool parse_literal(Parser *parser, const char *word) {
    size_t length = strlen(word);
    if ((size_t)(parser->end - parser->at) < length || memcmp(parser->at, word, length) != 0)
        return fail("unexpected character");
    parser->at += length;
    return true;
}

static bool parse_value(Parser *parser, Json *value, int depth) {
    if (depth > MAX_DEPTH)
        return fail("nested too deeply");
    skip_space(parser);
    if (parser->at >= parser->end)
        return fail("unexpected end of input");
    switch (*parser->at) {
    case '{':
        parser->at++;
        value->type = JSON_OBJECT;
        return parse_items(parser, value, '}', depth);
    case '[':
        parser->at++;
        value->type = JSON_ARRAY;
        return parse_items(parser, value, ']', depth);
    case '"':
        parser->at++;
        value->type = JSON_STRING;
        return parse_string(parser, &value->string, &value->length);
    case 't':
        value->type = JSON_BOOL;
        value->boolean = true;
        return parse_literal(parser, "true");
    case 'f':
        value->type = JSON_BOOL;
        return parse_literal(parser, "false");
    case 'n':
        value->type = JSON_NULL;
        return parse_literal(parser, "null");
    default:
        return parse_number(parser, value);
    }
}

/* A whole line of JSON; false (and ``failure``) if it is not one value. */
static bool parse_json(const char *text, size_t length, Json *value) {
    Parser parser = {text, text + length};
    memset(value, 0, sizeof *value);
    if (!parse_value(&parser, value, 0)) {
        char reason[sizeof failure];
        snprintf(reason, sizeof reason, "%s", failure);
        json_free(value);
        return fail("not valid JSON: %s at character %zu", reason, (size_t)(parser.at - text));
    }
    skip_space(&parser);
    if (parser.at != parser.end) {
        json_free(value);
        return fail("not valid JSON: extra data at character %zu", (size_t)(parser.at - text));
    }
    return true;
}

/* An object's member called ``key`` (the last one, as Python's json module keeps), or NULL. */
static const Json *member(const Json *object, const char *key) {
    if (object == NULL || object->type != JSON_OBJECT)
        return NULL;
    for (size_t index = object->count; index-- > 0;)
        if (strcmp(object->items[index].key, key) == 0)
            return &object->items[index];
    return NULL;
}

/* Refuse members other than ``allowed`` (a NULL-terminated list), naming the first unknown one. */
static bool known_members(const Json *object, const char *const *allowed, const char *where) {
    for (size_t index = 0; index < object->count; index++) {
        const char *key = object->items[index].key;
        bool known = false;
        for (const char *const *name = allowed; *name != NULL; name++)
            known = known || strcmp(*name, key) == 0;
        if (!known)
            return fail("%s: unknown field '%s'", where, key);
    }
    return true;
}

/* A string member without NUL bytes. */
static bool get_string(const Json *object, const char *key, const char *where, const char **out) {
    const Json *value = member(object, key);
    if (value == NULL || value->type != JSON_STRING)
        return fail("%s: field '%s' must be a string", where, key);
    if (strlen(value->string) != value->length)
        return fail("%s: field '%s' contains a NUL byte", where, key);
    *out = value->string;
    return true;
}

/* An integer member from ``low`` to ``high``; ``fallback`` when absent, unless ``required``. */
static bool get_integer(const Json *object, const char *key, const char *where, long long low, long long high,
                        bool required, long long fallback, long long *out) {
    const Json *value = member(object, key);
    if (value == NULL) {
        if (required)
            return fail("%s: missing field '%s'", where, key);
        *out = fallback;
        return true;
    }
    if (value->type != JSON_NUMBER || !value->integral || value->integer < low || value->integer > high)
        return fail("%s: field '%s' must be an integer from %lld to %lld", where, key, low, high);
    *out = value->integer;
    return true;
}

/*
 * A JSON string of arbitrary bytes. Valid UTF-8 goes out as it is; a byte that is
 * not part of valid UTF-8 goes out as \udcXX, the way Python writes a file name it
 * decoded with "surrogateescape", so both drivers say the same thing of odd names.
 */
static void add_json_string(Buffer *out, const char *text, size_t length) {
    const unsigned char *bytes = (const unsigned char *)text;
    buffer_text(out, "\"");
    for (size_t index = 0; index < length;) {
        unsigned char byte = bytes[index];
        if (byte == '"' || byte == '\\') {
            buffer_add(out, "\\", 1);
            buffer_add(out, &byte, 1);
            index++;
            continue;
        }
        if (byte < 0x20) {
            buffer_format(out, "\\u%04x", byte);
            index++;
            continue;
        }
        if (byte < 0x80) {
            buffer_add(out, &byte, 1);
            index++;
            continue;
        }
        /* How long a valid sequence starting here is, or 0 (strict: no overlongs, surrogates or > U+10FFFF). */
        size_t size = byte >= 0xC2 && byte <= 0xDF ? 2 : byte >= 0xE0 && byte <= 0xEF ? 3
                                                         : byte >= 0xF0 && byte <= 0xF4 ? 4
                                                                                         : 0;
        if (size && index + size <= length) {
            unsigned char second = bytes[index + 1];
            unsigned char low = 0x80, high = 0xBF;
            if (byte == 0xE0)
                low = 0xA0;
            else if (byte == 0xED)
                high = 0x9F;
            else if (byte == 0xF0)
                low = 0x90;
            else if (byte == 0xF4)
                high = 0x8F;
            bool valid = second >= low && second <= high;
            for (size_t next = 2; valid && next < size; next++)
                valid = (bytes[index + next] & 0xC0) == 0x80;
            if (valid) {
                buffer_add(out, bytes + index, size);
                index += size;
                continue;
            }
        }
        buffer_format(out, "\\udc%02x", byte);
        index++;
    }
    buffer_text(out, "\"");
}

static void add_json_text(Buffer *out, const char *text) { add_json_string(out, text, strlen(text)); }

/* -- base64 and SHA-256 ------------------------------------------------------------------------- */

static const char BASE64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void add_base64(Buffer *out, const unsigned char *data, size_t length) {
    for (size_t index = 0; index < length; index += 3) {
        unsigned long group = (unsigned long)data[index] << 16;
        if (index + 1 < length)
            group |= (unsigned long)data[index + 1] << 8;
        if (index + 2 < length)
            group |= data[index + 2];
        char quad[4] = {BASE64[(group >> 18) & 63], BASE64[(group >> 12) & 63],
                        index + 1 < length ? BASE64[(group >> 6) & 63] : '=',
                        index + 2 < length ? BASE64[group & 63] : '='};
        buffer_add(out, quad, 4);
    }
}

/* Strict base64 (padding required, nothing outside the alphabet); the bytes go to ``out``. */
static bool decode_base64(const char *text, Buffer *out) {
    size_t length = strlen(text), padding = 0;
    while (padding < 2 && padding < length && text[length - 1 - padding] == '=')
        padding++;
    size_t characters = length - padding;
    size_t remainder = characters % 4;
    if (length % 4 != 0 || (remainder == 0 && padding != 0) || remainder == 1)
        return false;
    unsigned long group = 0;
    buffer_add(out, "", 0);
    for (size_t index = 0; index < characters; index++) {
        const char *place = text[index] ? strchr(BASE64, text[index]) : NULL;
        if (place == NULL)
            return false;
        group = (group << 6) | (unsigned long)(place - BASE64);
        if (index % 4 == 3) {
            unsigned char bytes[3] = {(unsigned char)(group >> 16), (unsigned char)(group >> 8), (unsigned char)group};
            buffer_add(out, bytes, 3);
            group = 0;
        }
    }
    if (remainder == 2) {
        unsigned char byte = (unsigned char)(group >> 4);
        buffer_add(out, &byte, 1);
    } else if (remainder == 3) {
        unsigned char bytes[2] = {(unsigned char)(group >> 10), (unsigned char)(group >> 2)};
        buffer_add(out, bytes, 2);
    }
    return true;
}

/* SHA-256 (FIPS 180-4), enough to hash a file in blocks. */
typedef struct {
    uint32_t state[8];
    uint64_t bits;
    unsigned char block[64];
    size_t used;
} Sha256;

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotate_right(uint32_t word, int count) { return (word >> count) | (word << (32 - count)); }

static void sha256_block(Sha256 *hash, const unsigned char *block) {
    uint32_t words[64], v[8];
    for (int index = 0; index < 16; index++)
        words[index] = (uint32_t)block[4 * index] << 24 | (uint32_t)block[4 * index + 1] << 16 |
                       (uint32_t)block[4 * index + 2] << 8 | (uint32_t)block[4 * index + 3];
    for (int index = 16; index < 64; index++) {
        uint32_t early = words[index - 15], late = words[index - 2];
        uint32_t s0 = rotate_right(early, 7) ^ rotate_right(early, 18) ^ (early >> 3);
        uint32_t s1 = rotate_right(late, 17) ^ rotate_right(late, 19) ^ (late >> 10);
        words[index] = words[index - 16] + s0 + words[index - 7] + s1;
    }
    memcpy(v, hash->state, sizeof v);
    for (int index = 0; index < 64; index++) {
        uint32_t s1 = rotate_right(v[4], 6) ^ rotate_right(v[4], 11) ^ rotate_right(v[4], 25);
        uint32_t choose = (v[4] & v[5]) ^ (~v[4] & v[6]);
        uint32_t first = v[7] + s1 + choose + SHA256_K[index] + words[index];
        uint32_t s0 = rotate_right(v[0], 2) ^ rotate_right(v[0], 13) ^ rotate_right(v[0], 22);
        uint32_t majority = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += first;
        v[0] = first + s0 + majority;
    }
    for (int index = 0; index < 8; index++)
        hash->state[index] += v[index];
}

static void sha256_start(Sha256 *hash) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(hash->state, initial, sizeof initial);
    hash->bits = 0;
    hash->used = 0;
}

static void sha256_add(Sha256 *hash, const unsigned char *data, size_t length) {
    hash->bits += (uint64_t)length * 8;
    while (length > 0) {
        size_t take = 64 - hash->used < length ? 64 - hash->used : length;
        memcpy(hash->block + hash->used, data, take);
        hash->used += take;
        data += take;
        length -= take;
        if (hash->used == 64) {
            sha256_block(hash, hash->block);
            hash->used = 0;
        }
    }
}

/* The digest in lower-case hex (65 bytes with the NUL). */
static void sha256_finish(Sha256 *hash, char hex[65]) {
    uint64_t bits = hash->bits;
    unsigned char pad = 0x80, zero = 0, length[8];
    sha256_add(hash, &pad, 1);
    while (hash->used != 56)
        sha256_add(hash, &zero, 1);
    for (int index = 0; index < 8; index++)
        length[index] = (unsigned char)(bits >> (56 - 8 * index));
    sha256_add(hash, length, 8);
    for (int index = 0; index < 8; index++)
        snprintf(hex + 8 * index, 9, "%08x", hash->state[index]);
}

/* -- errno names -------------------------------------------------------------------------------- */

/* The symbolic names cowspec's Python driver reports (its errno.errorcode on Linux, aliases included). */
static const char *const ERRNO_NAMES[] = {
    [1] = "EPERM", [2] = "ENOENT", [3] = "ESRCH", [4] = "EINTR", [5] = "EIO", [6] = "ENXIO", [7] = "E2BIG",
    [8] = "ENOEXEC", [9] = "EBADF", [10] = "ECHILD", [11] = "EAGAIN", [12] = "ENOMEM", [13] = "EACCES",
    [14] = "EFAULT", [15] = "ENOTBLK", [16] = "EBUSY", [17] = "EEXIST", [18] = "EXDEV", [19] = "ENODEV",
    [20] = "ENOTDIR", [21] = "EISDIR", [22] = "EINVAL", [23] = "ENFILE", [24] = "EMFILE", [25] = "ENOTTY",
    [26] = "ETXTBSY", [27] = "EFBIG", [28] = "ENOSPC", [29] = "ESPIPE", [30] = "EROFS", [31] = "EMLINK",
    [32] = "EPIPE", [33] = "EDOM", [34] = "ERANGE", [35] = "EDEADLOCK", [36] = "ENAMETOOLONG", [37] = "ENOLCK",
    [38] = "ENOSYS", [39] = "ENOTEMPTY", [40] = "ELOOP", [42] = "ENOMSG", [43] = "EIDRM", [44] = "ECHRNG",
    [45] = "EL2NSYNC", [46] = "EL3HLT", [47] = "EL3RST", [48] = "ELNRNG", [49] = "EUNATCH", [50] = "ENOCSI",
    [51] = "EL2HLT", [52] = "EBADE", [53] = "EBADR", [54] = "EXFULL", [55] = "ENOANO", [56] = "EBADRQC",
    [57] = "EBADSLT", [59] = "EBFONT", [60] = "ENOSTR", [61] = "ENODATA", [62] = "ETIME", [63] = "ENOSR",
    [64] = "ENONET", [65] = "ENOPKG", [66] = "EREMOTE", [67] = "ENOLINK", [68] = "EADV", [69] = "ESRMNT",
    [70] = "ECOMM", [71] = "EPROTO", [72] = "EMULTIHOP", [73] = "EDOTDOT", [74] = "EBADMSG", [75] = "EOVERFLOW",
    [76] = "ENOTUNIQ", [77] = "EBADFD", [78] = "EREMCHG", [79] = "ELIBACC", [80] = "ELIBBAD", [81] = "ELIBSCN",
    [82] = "ELIBMAX", [83] = "ELIBEXEC", [84] = "EILSEQ", [85] = "ERESTART", [86] = "ESTRPIPE", [87] = "EUSERS",
    [88] = "ENOTSOCK", [89] = "EDESTADDRREQ", [90] = "EMSGSIZE", [91] = "EPROTOTYPE", [92] = "ENOPROTOOPT",
    [93] = "EPROTONOSUPPORT", [94] = "ESOCKTNOSUPPORT", [95] = "ENOTSUP", [96] = "EPFNOSUPPORT",
    [97] = "EAFNOSUPPORT", [98] = "EADDRINUSE", [99] = "EADDRNOTAVAIL", [100] = "ENETDOWN", [101] = "ENETUNREACH",
    [102] = "ENETRESET", [103] = "ECONNABORTED", [104] = "ECONNRESET", [105] = "ENOBUFS", [106] = "EISCONN",
    [107] = "ENOTCONN", [108] = "ESHUTDOWN", [109] = "ETOOMANYREFS", [110] = "ETIMEDOUT", [111] = "ECONNREFUSED",
    [112] = "EHOSTDOWN", [113] = "EHOSTUNREACH", [114] = "EALREADY", [115] = "EINPROGRESS", [116] = "ESTALE",
    [117] = "EUCLEAN", [118] = "ENOTNAM", [119] = "ENAVAIL", [120] = "EISNAM", [121] = "EREMOTEIO",
    [122] = "EDQUOT", [123] = "ENOMEDIUM", [124] = "EMEDIUMTYPE", [125] = "ECANCELED", [126] = "ENOKEY",
    [127] = "EKEYEXPIRED", [128] = "EKEYREVOKED", [129] = "EKEYREJECTED", [130] = "EOWNERDEAD",
    [131] = "ENOTRECOVERABLE", [132] = "ERFKILL"};

static void add_errno(Buffer *out, int number) {
    if (number > 0 && (size_t)number < sizeof ERRNO_NAMES / sizeof ERRNO_NAMES[0] && ERRNO_NAMES[number])
        buffer_format(out, "{\"errno\": \"%s\"}", ERRNO_NAMES[number]);
    else
        buffer_format(out, "{\"errno\": \"E%d\"}", number);
}

/* -- layers on disk ----------------------------------------------------------------------------- */

typedef enum { ENTRY_DIR, ENTRY_FILE, ENTRY_SYMLINK, ENTRY_HARDLINK, ENTRY_WHITEOUT } EntryType;

/* One entry of a cowspec-trace/1 layer, decoded and checked. */
typedef struct {
    const char *path;
    EntryType type;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    Buffer data;        /* a file's contents */
    const char *target; /* a symlink's target, or the path a hardlink names */
    bool opaque;
    size_t order; /* place in the layer, to keep entries of one depth in the order given */
} LayerEntry;

/* Absolute, no ".", ".." or empty component, no trailing slash; "/" itself is normalised. */
static bool is_normalised(const char *path) {
    if (strcmp(path, "/") == 0)
        return true;
    if (path[0] != '/' || path[strlen(path) - 1] == '/')
        return false;
    for (const char *part = path + 1; *part;) {
        size_t length = strcspn(part, "/");
        if (length == 0 || (length == 1 && part[0] == '.') || (length == 2 && part[0] == '.' && part[1] == '.'))
            return false;
        part += length + (part[length] == '/');
    }
    return true;
}

/* One layer entry, checked as cowspec-trace/1 says (defaults filled in). */
static bool decode_entry(const Json *value, const char *where, size_t order, LayerEntry *entry) {
    static const char *const fields[] = {"path", "type", "mode", "uid", "gid", "data", "target", "opaque", NULL};
    static const char *const types[] = {"dir", "file", "symlink", "hardlink", "whiteout"};
    memset(entry, 0, sizeof *entry);
    entry->order = order;
    const char *kind;
    long long mode, uid, gid;
    if (value->type != JSON_OBJECT)
        return fail("%s: expected a JSON object", where);
    if (!get_string(value, "path", where, &entry->path))
        return false;
    if (!is_normalised(entry->path))
        return fail("%s: path '%s' is not absolute and normalised", where, entry->path);
    if (!get_string(value, "type", where, &kind))
        return false;
    size_t type = 0;
    while (type < 5 && strcmp(types[type], kind) != 0)
        type++;
    if (type == 5)
        return fail("%s: type must be one of dir, file, symlink, hardlink, whiteout", where);
    entry->type = (EntryType)type;
    if (!known_members(value, fields, where) ||
        !get_integer(value, "mode", where, 0, 07777, false, entry->type == ENTRY_DIR ? 0755 : 0644, &mode) ||
        !get_integer(value, "uid", where, 0, MAX_ID, false, 0, &uid) ||
        !get_integer(value, "gid", where, 0, MAX_ID, false, 0, &gid))
        return false;
    const Json *opaque = member(value, "opaque");
    if (opaque != NULL && (opaque->type != JSON_BOOL || (opaque->boolean && entry->type != ENTRY_DIR)))
        return fail("%s: opaque must be true or false, and only on a directory", where);
    entry->opaque = opaque != NULL && opaque->boolean;
    if (strcmp(entry->path, "/") == 0 && entry->type != ENTRY_DIR)
        return fail("%s: the root can only be a directory", where);
    if (entry->type == ENTRY_FILE && member(value, "data") != NULL) {
        const char *text;
        if (!get_string(value, "data", where, &text))
            return false;
        if (!decode_base64(text, &entry->data))
            return fail("%s: field 'data' is not valid base64", where);
    }
    if (entry->type == ENTRY_SYMLINK || entry->type == ENTRY_HARDLINK) {
        if (!get_string(value, "target", where, &entry->target))
            return false;
        if (entry->target[0] == '\0')
            return fail("%s: a %s needs a non-empty target", where, kind);
    }
    /* A symlink, hardlink or whiteout has no mode; a hardlink or whiteout no owner either. */
    entry->mode = entry->type == ENTRY_DIR || entry->type == ENTRY_FILE ? (mode_t)mode : 0;
    bool owned = entry->type != ENTRY_HARDLINK && entry->type != ENTRY_WHITEOUT;
    entry->uid = owned ? (uid_t)uid : 0;
    entry->gid = owned ? (gid_t)gid : 0;
    return true;
}

static int path_depth(const char *path) {
    int depth = 0;
    if (strcmp(path, "/") != 0)
        for (; *path; path++)
            depth += *path == '/';
    return depth;
}

/* Shallow entries first, entries of one depth in the order given. */
static int by_depth(const void *left, const void *right) {
    const LayerEntry *a = *(LayerEntry *const *)left, *b = *(LayerEntry *const *)right;
    int difference = path_depth(a->path) - path_depth(b->path);
    return difference ? difference : (a->order > b->order) - (a->order < b->order);
}

static int by_entry_path(const void *left, const void *right) {
    return strcmp((*(LayerEntry *const *)left)->path, (*(LayerEntry *const *)right)->path);
}

/* The entry at ``path`` in a layer sorted by path, or NULL. */
static LayerEntry *find_entry(LayerEntry **sorted, size_t count, const char *path) {
    LayerEntry key = {.path = path}, *pointer = &key;
    LayerEntry **found = bsearch(&pointer, sorted, count, sizeof *sorted, by_entry_path);
    return found ? *found : NULL;
}

/* Make every proper ancestor of ``path`` below ``directory`` that is not there yet (0755, as implied). */
static bool make_ancestors(const char *directory, const char *path) {
    Buffer real = {0};
    buffer_text(&real, directory);
    size_t base = real.length;
    buffer_text(&real, path);
    for (char *slash = strchr(real.data + base + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        struct stat info;
        *slash = '\0';
        /* lstat, not stat, and only directories: a symlink in the layer must never lead out of it. */
        bool made = lstat(real.data, &info) == 0 ? S_ISDIR(info.st_mode) || fail("%s lies below a non-directory", path)
                                                  : mkdir(real.data, 0755) == 0 || fail("mkdir %s: %s", real.data,
                                                                                        strerror(errno));
        if (!made) {
            free(real.data);
            return false;
        }
        *slash = '/';
    }
    free(real.data);
    return true;
}

static bool write_file(const char *real, const LayerEntry *entry) {
    int fd = open(real, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail("create %s: %s", real, strerror(errno));
    size_t done = 0;
    while (done < entry->data.length) {
        ssize_t written = write(fd, entry->data.data + done, entry->data.length - done);
        if (written < 0) {
            close(fd);
            return fail("write %s: %s", real, strerror(errno));
        }
        done += (size_t)written;
    }
    /* Owner first: chown clears the set-user-ID and set-group-ID bits that chmod then sets. */
    if (fchown(fd, entry->uid, entry->gid) != 0 || fchmod(fd, entry->mode) != 0) {
        close(fd);
        return fail("chown/chmod %s: %s", real, strerror(errno));
    }
    close(fd);
    return true;
}

/*
 * Write one layer into ``directory`` in overlay2's on-disk form. The order is
 * the Python driver's: files, symlinks, whiteouts and directories shallow
 * first; then hardlinks; then each directory's owner, mode and opaque mark,
 * deepest first, so a read-only directory is finished after its contents.
 */
static bool lay_out(LayerEntry *entries, size_t count, const char *directory, const char *where) {
    bool ok = false;
    LayerEntry **ordered = allocate(NULL, count * sizeof *ordered), **sorted = allocate(NULL, count * sizeof *sorted);
    for (size_t index = 0; index < count; index++)
        ordered[index] = sorted[index] = &entries[index];
    qsort(ordered, count, sizeof *ordered, by_depth);
    qsort(sorted, count, sizeof *sorted, by_entry_path);
    for (size_t index = 1; index < count; index++)
        if (strcmp(sorted[index - 1]->path, sorted[index]->path) == 0) {
            fail("%s: duplicate path '%s'", where, sorted[index]->path);
            goto done;
        }
    if (mkdir(directory, 0755) != 0) {
        fail("mkdir %s: %s", directory, strerror(errno));
        goto done;
    }
    for (size_t index = 0; index < count; index++) {
        LayerEntry *entry = ordered[index];
        if (entry->type == ENTRY_HARDLINK || strcmp(entry->path, "/") == 0)
            continue;
        char *real = join_path(directory, entry->path + 1);
        bool made = make_ancestors(directory, entry->path);
        if (made && entry->type == ENTRY_DIR && mkdir(real, 0755) != 0)
            made = fail("mkdir %s: %s", real, strerror(errno));
        else if (made && entry->type == ENTRY_FILE)
            made = write_file(real, entry);
        else if (made && entry->type == ENTRY_SYMLINK &&
                 (symlink(entry->target, real) != 0 || lchown(real, entry->uid, entry->gid) != 0))
            made = fail("symlink %s: %s", real, strerror(errno));
        else if (made && entry->type == ENTRY_WHITEOUT && mknod(real, S_IFCHR, makedev(0, 0)) != 0)
            made = fail("mknod %s: %s", real, strerror(errno));
        free(real);
        if (!made)
            goto done;
    }
    for (size_t index = 0; index < count; index++) {
        LayerEntry *entry = &entries[index];
        if (entry->type != ENTRY_HARDLINK)
            continue;
        /* A hardlink may name another hardlink: follow the chain to the file or symlink. */
        LayerEntry *origin = entry;
        for (size_t steps = 0; origin != NULL && origin->type == ENTRY_HARDLINK && steps <= count; steps++)
            origin = find_entry(sorted, count, origin->target);
        if (origin == NULL || (origin->type != ENTRY_FILE && origin->type != ENTRY_SYMLINK)) {
            fail("%s: hardlink '%s' must name a file or symlink of the same layer", where, entry->path);
            goto done;
        }
        char *real = join_path(directory, entry->path + 1), *source = join_path(directory, origin->path + 1);
        bool made = make_ancestors(directory, entry->path);
        if (made && linkat(AT_FDCWD, source, AT_FDCWD, real, 0) != 0) /* 0: a symlink is linked, not followed */
            made = fail("link %s: %s", real, strerror(errno));
        free(real);
        free(source);
        if (!made)
            goto done;
    }
    for (size_t index = count; index-- > 0;) {
        LayerEntry *entry = ordered[index];
        if (entry->type != ENTRY_DIR)
            continue;
        char *real = join_path(directory, entry->path + 1);
        bool made = lchown(real, entry->uid, entry->gid) == 0 && chmod(real, entry->mode) == 0 &&
                    (!entry->opaque || lsetxattr(real, OPAQUE_XATTR, "y", 1, 0) == 0);
        if (!made)
            fail("finish directory %s: %s", real, strerror(errno));
        free(real);
        if (!made)
            goto done;
    }
    ok = true;
done:
    free(ordered);
    free(sorted);
    return ok;
}

/* -- observing trees ---------------------------------------------------------------------------- */

/* One entry of a tree: its path (the sort key) and its JSON object. */
typedef struct {
    char *path;
    char *json;
} TreeEntry;

typedef struct {
    TreeEntry *items;
    size_t count;
} Tree;

static void tree_free(Tree *tree) {
    for (size_t index = 0; index < tree->count; index++) {
        free(tree->items[index].path);
        free(tree->items[index].json);
    }
    free(tree->items);
    tree->items = NULL;
    tree->count = 0;
}

/* The SHA-256 of a regular file's contents, in hex. */
static bool hash_file(const char *real, char hex[65]) {
    int fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return fail("open %s: %s", real, strerror(errno));
    Sha256 hash;
    sha256_start(&hash);
    unsigned char block[65536];
    ssize_t got;
    while ((got = read(fd, block, sizeof block)) > 0)
        sha256_add(&hash, block, (size_t)got);
    int error = errno;
    close(fd);
    if (got < 0)
        return fail("read %s: %s", real, strerror(error));
    sha256_finish(&hash, hex);
    return true;
}

/* One entry of ``merged`` (upper false) or ``upper`` (upper true), from what lstat says. */
static bool describe(const char *logical, const char *real, const struct stat *info, bool upper, Buffer *out) {
    mode_t mode = info->st_mode, bits = info->st_mode & 07777;
    buffer_text(out, "{\"path\": ");
    add_json_text(out, logical);
    if (S_ISDIR(mode)) {
        buffer_format(out, ", \"type\": \"dir\", \"mode\": %u, \"uid\": %u, \"gid\": %u", bits, info->st_uid,
                      info->st_gid);
        if (upper) {
            char value[8];
            ssize_t length = lgetxattr(real, OPAQUE_XATTR, value, sizeof value);
            buffer_text(out, length == 1 && value[0] == 'y' ? ", \"opaque\": true" : ", \"opaque\": false");
        }
    } else if (S_ISLNK(mode)) {
        char *target = NULL;
        size_t size = 256;
        ssize_t length;
        do { /* a buffer that the target does not fill is large enough */
            size *= 2;
            target = allocate(target, size);
            length = readlink(real, target, size);
        } while (length >= 0 && (size_t)length == size);
        if (length < 0) {
            free(target);
            return fail("readlink %s: %s", real, strerror(errno));
        }
        buffer_format(out, ", \"type\": \"symlink\", \"uid\": %u, \"gid\": %u, \"target\": ", info->st_uid,
                      info->st_gid);
        add_json_string(out, target, (size_t)length);
        free(target);
    } else if (S_ISREG(mode)) {
        char hex[65];
        if (!hash_file(real, hex))
            return false;
        buffer_format(out, ", \"type\": \"file\", \"mode\": %u, \"uid\": %u, \"gid\": %u", bits, info->st_uid,
                      info->st_gid);
        buffer_format(out, ", \"size\": %lld, \"sha256\": \"%s\"", (long long)info->st_size, hex);
        if (!upper)
            buffer_format(out, ", \"nlink\": %llu", (unsigned long long)info->st_nlink);
    } else if (S_ISCHR(mode) && info->st_rdev == 0 && upper) {
        buffer_text(out, ", \"type\": \"whiteout\"");
    } else {
        buffer_format(out, ", \"type\": \"other\", \"mode\": %u, \"uid\": %u, \"gid\": %u", bits, info->st_uid,
                      info->st_gid);
    }
    buffer_text(out, "}");
    return true;
}

/*
 * Call ``visit`` on everything below the directory ``top``, with its container
 * path ("/a/b") and its lstat. The walk keeps a list of directories still to
 * read rather than recursing, so one directory is open at a time however deep
 * the tree. A name whose lstat says ENOENT is skipped: overlayfs lists a
 * whiteout of a directory that is not merged, but says it does not exist.
 */
typedef bool (*Visit)(const char *logical, const char *real, const struct stat *info, void *context);

static bool walk(const char *top, Visit visit, void *context) {
    char **pending = allocate(NULL, 2 * sizeof *pending); /* pairs: container path, real path */
    size_t count = 1;
    pending[0] = copy_text("");
    pending[1] = copy_text(top);
    bool ok = true;
    while (count > 0) {
        count--;
        char *logical = pending[2 * count], *real = pending[2 * count + 1];
        DIR *directory = ok ? opendir(real) : NULL;
        if (ok && directory == NULL)
            ok = fail("opendir %s: %s", real, strerror(errno));
        struct dirent *found;
        while (ok && (errno = 0, found = readdir(directory)) != NULL) {
            if (strcmp(found->d_name, ".") == 0 || strcmp(found->d_name, "..") == 0)
                continue;
            char *child_logical = join_path(logical[0] ? logical : "/", found->d_name);
            char *child_real = join_path(real, found->d_name);
            struct stat info;
            bool keep = false;
            if (lstat(child_real, &info) == 0) {
                ok = visit(child_logical, child_real, &info, context);
                keep = ok && S_ISDIR(info.st_mode);
            } else if (errno != ENOENT) {
                ok = fail("lstat %s: %s", child_real, strerror(errno));
            }
            if (keep) {
                pending = allocate(pending, 2 * (count + 1) * sizeof *pending);
                pending[2 * count] = child_logical;
                pending[2 * count++ + 1] = child_real;
            } else {
                free(child_logical);
                free(child_real);
            }
        }
        if (ok && errno != 0)
            ok = fail("readdir %s: %s", real, strerror(errno));
        if (directory != NULL)
            closedir(directory);
        free(logical);
        free(real);
    }
    free(pending);
    return ok;
}

typedef struct {
    Tree *tree;
    bool upper;
} TreeContext;

static bool add_to_tree(const char *logical, const char *real, const struct stat *info, void *context) {
    TreeContext *where = context;
    Buffer json = {0};
    if (!describe(logical, real, info, where->upper, &json)) {
        free(json.data);
        return false;
    }
    Tree *tree = where->tree;
    tree->items = allocate(tree->items, (tree->count + 1) * sizeof *tree->items);
    tree->items[tree->count++] = (TreeEntry){copy_text(logical), json.data};
    return true;
}

static int by_tree_path(const void *left, const void *right) {
    /* Byte order of UTF-8 is code point order, which is how the Python driver sorts. */
    return strcmp(((const TreeEntry *)left)->path, ((const TreeEntry *)right)->path);
}

/* The JSON array of every entry below ``top``, sorted by path. */
static bool tree_json(const char *top, bool upper, Buffer *out) {
    Tree tree = {0};
    TreeContext context = {&tree, upper};
    if (!walk(top, add_to_tree, &context)) {
        tree_free(&tree);
        return false;
    }
    qsort(tree.items, tree.count, sizeof *tree.items, by_tree_path);
    buffer_text(out, "[");
    for (size_t index = 0; index < tree.count; index++) {
        buffer_text(out, index ? ", " : "");
        buffer_text(out, tree.items[index].json);
    }
    buffer_text(out, "]");
    tree_free(&tree);
    return true;
}

/* Docker's directory.Size: the apparent bytes of everything but directories, each inode counted once. */
typedef struct {
    ino_t *inodes;
    off_t *sizes;
    size_t count;
} Sizes;

static bool add_size(const char *logical, const char *real, const struct stat *info, void *context) {
    (void)logical;
    (void)real;
    Sizes *sizes = context;
    if (S_ISDIR(info->st_mode) || info->st_size == 0)
        return true;
    sizes->inodes = allocate(sizes->inodes, (sizes->count + 1) * sizeof *sizes->inodes);
    sizes->sizes = allocate(sizes->sizes, (sizes->count + 1) * sizeof *sizes->sizes);
    sizes->inodes[sizes->count] = info->st_ino;
    sizes->sizes[sizes->count++] = info->st_size;
    return true;
}

static bool docker_size(const char *top, long long *total) {
    Sizes sizes = {0};
    bool ok = walk(top, add_size, &sizes);
    *total = 0;
    for (size_t index = 0; ok && index < sizes.count; index++) {
        bool seen = false; /* a layer has few files: a linear look back is plenty */
        for (size_t before = 0; before < index && !seen && !bug_size_counts_links; before++)
            seen = sizes.inodes[before] == sizes.inodes[index];
        if (!seen)
            *total += sizes.sizes[index];
    }
    free(sizes.inodes);
    free(sizes.sizes);
    return ok;
}

/* -- the ops, run inside the container root ----------------------------------------------------- */

/* An op of cowspec-trace/1, decoded and checked. */
typedef struct {
    const char *name;
    const char *path, *source, *destination, *target; /* source and destination: rename and link */
    long long mode, offset, size, uid, gid;
    int flags; /* open: O_RDONLY, O_WRONLY or O_RDWR */
    Buffer data;
} Op;

/* An op's path: absolute, and not ending in "/", "." or ".." (the root aside). */
static bool op_path(const Json *object, const char *key, const char *where, const char **out) {
    if (!get_string(object, key, where, out))
        return false;
    const char *path = *out, *last = strrchr(path, '/');
    if (path[0] != '/')
        return fail("%s: %s '%s' is not absolute", where, key, path);
    if (strcmp(path, "/") != 0 && (strcmp(last, "/") == 0 || strcmp(last, "/.") == 0 || strcmp(last, "/..") == 0))
        return fail("%s: %s '%s' ends in '/', '.' or '..', which the spec does not cover", where, key, path);
    return true;
}

static bool decode_op(const Json *object, Op *op) {
    static const struct {
        const char *name;
        const char *fields[5];
    } shapes[] = {
        {"create", {"op", "path", "mode"}},    {"open", {"op", "path", "flags"}},
        {"write", {"op", "path", "offset", "data"}}, {"append", {"op", "path", "data"}},
        {"truncate", {"op", "path", "size"}},  {"read", {"op", "path"}},
        {"stat", {"op", "path"}},              {"readdir", {"op", "path"}},
        {"readlink", {"op", "path"}},          {"mkdir", {"op", "path", "mode"}},
        {"rmdir", {"op", "path"}},             {"unlink", {"op", "path"}},
        {"rename", {"op", "src", "dst"}},      {"symlink", {"op", "target", "path"}},
        {"link", {"op", "src", "dst"}},        {"chmod", {"op", "path", "mode"}},
        {"chown", {"op", "path", "uid", "gid"}}};
    memset(op, 0, sizeof *op);
    if (object == NULL || object->type != JSON_OBJECT)
        return fail("op: expected a JSON object");
    const Json *given = member(object, "op");
    size_t shape = 0, known = sizeof shapes / sizeof shapes[0];
    while (given != NULL && given->type == JSON_STRING && shape < known && strcmp(shapes[shape].name, given->string))
        shape++;
    if (given == NULL || given->type != JSON_STRING || shape == known)
        return fail("op: unknown op");
    const char *name = op->name = shapes[shape].name;
    char where[32];
    snprintf(where, sizeof where, "op (%s)", name);
    if (!known_members(object, shapes[shape].fields, where))
        return false;
    if (!strcmp(name, "rename") || !strcmp(name, "link"))
        return op_path(object, "src", where, &op->source) && op_path(object, "dst", where, &op->destination);
    if (!op_path(object, "path", where, &op->path))
        return false;
    if (!strcmp(name, "create") || !strcmp(name, "mkdir") || !strcmp(name, "chmod"))
        return get_integer(object, "mode", where, 0, 07777, true, 0, &op->mode);
    if (!strcmp(name, "open")) {
        const Json *flags = member(object, "flags");
        const char *text = flags && flags->type == JSON_STRING ? flags->string : "";
        op->flags = !strcmp(text, "r") ? O_RDONLY : !strcmp(text, "w") ? O_WRONLY : !strcmp(text, "rw") ? O_RDWR : -1;
        return op->flags >= 0 ? true : fail("%s: flags must be \"r\", \"w\" or \"rw\"", where);
    }
    if (!strcmp(name, "write") || !strcmp(name, "append")) {
        const char *text;
        if (!strcmp(name, "write") && !get_integer(object, "offset", where, 0, MAX_OFFSET, true, 0, &op->offset))
            return false;
        if (!get_string(object, "data", where, &text))
            return false;
        return decode_base64(text, &op->data) ? true : fail("%s: field 'data' is not valid base64", where);
    }
    if (!strcmp(name, "truncate"))
        return get_integer(object, "size", where, -MAX_OFFSET, MAX_OFFSET, true, 0, &op->size);
    if (!strcmp(name, "symlink"))
        return get_string(object, "target", where, &op->target);
    if (!strcmp(name, "chown"))
        return get_integer(object, "uid", where, 0, MAX_ID, true, 0, &op->uid) &&
               get_integer(object, "gid", where, 0, MAX_ID, true, 0, &op->gid);
    return true; /* read, stat, readdir, readlink, rmdir, unlink: the path alone */
}

/* The names in a directory, without "." and ".." (to free with free_names); -1 and errno on failure. */
static int list_directory(const char *path, char ***names, size_t *count) {
    DIR *directory = opendir(path);
    if (directory == NULL)
        return -1;
    struct dirent *found;
    *names = NULL;
    *count = 0;
    while ((errno = 0, found = readdir(directory)) != NULL) {
        if (strcmp(found->d_name, ".") == 0 || strcmp(found->d_name, "..") == 0)
            continue;
        *names = allocate(*names, (*count + 1) * sizeof **names);
        (*names)[(*count)++] = copy_text(found->d_name);
    }
    int error = errno;
    closedir(directory);
    if (error) {
        for (size_t index = 0; index < *count; index++)
            free((*names)[index]);
        free(*names);
    }
    errno = error;
    return error ? -1 : 0;
}

static int by_name(const void *left, const void *right) {
    return strcmp(*(char *const *)left, *(char *const *)right);
}

static void free_names(char **names, size_t count) {
    for (size_t index = 0; index < count; index++)
        free(names[index]);
    free(names);
}

/* The image's layer directories, opened before chroot; only --bug=rmdir-checks-lower looks at them. */
static int *lower_fds;
static size_t lower_count;

/*
 * The planted bug: true when ``path`` looks empty in the merged view but one of
 * the image's copies of it still holds something (which the merged view hides,
 * by a whiteout or an opaque directory above it). A careless implementation
 * that asks the layers, not the merged view, whether a directory is empty
 * refuses such an rmdir with ENOTEMPTY.
 */
static bool lower_copy_has_entries(const char *path) {
    char **names;
    size_t count;
    struct stat info;
    if (strcmp(path, "/") == 0 || !is_normalised(path)) /* the root, or a path with "..", "." or "//" */
        return false;
    if (lstat(path, &info) != 0 || !S_ISDIR(info.st_mode) || list_directory(path, &names, &count) != 0)
        return false;
    free_names(names, count);
    if (count != 0)
        return false;
    for (size_t index = 0; index < lower_count; index++) {
        int fd = openat(lower_fds[index], path + 1, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        DIR *directory = fdopendir(fd);
        if (directory == NULL) {
            close(fd);
            continue;
        }
        bool holds = false;
        struct dirent *found;
        while (!holds && (found = readdir(directory)) != NULL)
            holds = strcmp(found->d_name, ".") != 0 && strcmp(found->d_name, "..") != 0;
        closedir(directory);
        if (holds)
            return true;
    }
    return false;
}

/* Perform ``op`` with the real system call; its result item goes to ``out``. */
static void perform(const Op *op, Buffer *out) {
    const char *name = op->name;
    Buffer value = {0}; /* a successful op's value, as JSON */
    int fd = -1, result = 0;
    if (!strcmp(name, "create") || !strcmp(name, "open")) {
        fd = !strcmp(name, "create") ? open(op->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, (mode_t)op->mode)
                                     : open(op->path, op->flags | O_CLOEXEC);
        result = fd < 0 ? -1 : 0;
    } else if (!strcmp(name, "write") || !strcmp(name, "append")) {
        bool append = !strcmp(name, "append");
        fd = open(op->path, O_WRONLY | O_CLOEXEC | (append ? O_APPEND : 0));
        ssize_t written = fd < 0                 ? -1
                          : append               ? write(fd, op->data.data, op->data.length)
                                                 : pwrite(fd, op->data.data, op->data.length, (off_t)op->offset);
        result = written < 0 ? -1 : 0;
    } else if (!strcmp(name, "truncate")) {
        result = truncate(op->path, (off_t)op->size);
    } else if (!strcmp(name, "read")) {
        fd = open(op->path, O_RDONLY | O_CLOEXEC);
        Buffer data = {0};
        unsigned char block[65536];
        ssize_t got = 0;
        while (fd >= 0 && (got = read(fd, block, sizeof block)) > 0)
            buffer_add(&data, block, (size_t)got);
        result = fd < 0 || got < 0 ? -1 : 0;
        if (result == 0) {
            buffer_text(&value, "\"");
            add_base64(&value, (const unsigned char *)data.data, data.length);
            buffer_text(&value, "\"");
        }
        int saved = errno; /* what open or read said, whatever free does */
        free(data.data);
        errno = saved;
    } else if (!strcmp(name, "stat")) {
        struct stat info;
        result = lstat(op->path, &info);
        if (result == 0) {
            /* Anything neither a directory nor a symlink is reported as a file, as the Python driver does. */
            const char *kind = S_ISDIR(info.st_mode) ? "dir" : S_ISLNK(info.st_mode) ? "symlink" : "file";
            buffer_format(&value, "{\"type\": \"%s\", \"mode\": %u, \"uid\": %u, \"gid\": %u", kind,
                          info.st_mode & 07777, info.st_uid, info.st_gid);
            if (strcmp(kind, "dir") != 0)
                buffer_format(&value, ", \"size\": %lld", (long long)info.st_size);
            if (strcmp(kind, "file") == 0)
                buffer_format(&value, ", \"nlink\": %llu", (unsigned long long)info.st_nlink);
            buffer_text(&value, "}");
        }
    } else if (!strcmp(name, "readdir")) {
        char **names;
        size_t count;
        result = list_directory(op->path, &names, &count);
        if (result == 0) {
            qsort(names, count, sizeof *names, by_name);
            buffer_text(&value, "[");
            for (size_t index = 0; index < count; index++) {
                buffer_text(&value, index ? ", " : "");
                add_json_text(&value, names[index]);
            }
            buffer_text(&value, "]");
            free_names(names, count);
        }
    } else if (!strcmp(name, "readlink")) {
        char target[PATH_MAX + 1];
        ssize_t length = readlink(op->path, target, sizeof target);
        result = length < 0 ? -1 : 0;
        if (result == 0)
            add_json_string(&value, target, (size_t)length);
    } else if (!strcmp(name, "mkdir")) {
        result = mkdir(op->path, (mode_t)op->mode);
    } else if (!strcmp(name, "rmdir")) {
        if (bug_rmdir_checks_lower && lower_copy_has_entries(op->path)) {
            errno = ENOTEMPTY;
            result = -1;
        } else {
            result = rmdir(op->path);
        }
    } else if (!strcmp(name, "unlink")) {
        result = unlink(op->path);
    } else if (!strcmp(name, "rename")) {
        result = rename(op->source, op->destination);
    } else if (!strcmp(name, "symlink")) {
        result = symlink(op->target, op->path);
    } else if (!strcmp(name, "link")) {
        result = linkat(AT_FDCWD, op->source, AT_FDCWD, op->destination, 0); /* 0: do not follow a symlink */
    } else if (!strcmp(name, "chmod")) {
        result = chmod(op->path, (mode_t)op->mode);
    } else if (!strcmp(name, "chown")) {
        result = lchown(op->path, (uid_t)op->uid, (gid_t)op->gid);
    }
    int error = errno;
    if (fd >= 0)
        close(fd);
    if (result != 0)
        add_errno(out, error);
    else if (value.length == 0)
        buffer_text(out, "{\"ok\": true}");
    else
        buffer_format(out, "{\"ok\": true, \"value\": %s}", value.data);
    free(value.data);
}

/* -- the container process ---------------------------------------------------------------------- */

/* Send one line (a NUL-terminated text without its newline) and flush; false if the reader is gone. */
static bool send_line(FILE *stream, const char *text) {
    return fputs(text, stream) >= 0 && fputc('\n', stream) != EOF && fflush(stream) == 0;
}

/*
 * The child's loop, inside the chroot: one request per line from the parent,
 * one reply per line back. {"request": "perform", "op": ...} performs an op;
 * {"request": "merged"} walks the merged tree. It exits when the pipe closes.
 */
static void serve_container(FILE *requests, FILE *replies) {
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    while ((length = getline(&line, &capacity, requests)) > 0) {
        Json request;
        Buffer reply = {0};
        const Json *kind;
        Op op;
        if (!parse_json(line, (size_t)length, &request)) {
            buffer_text(&reply, "{\"error\": ");
            add_json_text(&reply, failure);
            buffer_text(&reply, "}");
        } else if ((kind = member(&request, "request")) != NULL && kind->type == JSON_STRING &&
                   strcmp(kind->string, "merged") == 0) {
            if (!tree_json("/", false, &reply)) {
                reply.length = 0;
                buffer_text(&reply, "{\"error\": ");
                add_json_text(&reply, failure);
                buffer_text(&reply, "}");
            }
        } else if (decode_op(member(&request, "op"), &op)) {
            perform(&op, &reply);
            free(op.data.data);
        } else {
            free(op.data.data);
            buffer_text(&reply, "{\"error\": ");
            add_json_text(&reply, failure);
            buffer_text(&reply, "}");
        }
        json_free(&request);
        bool sent = send_line(replies, reply.data);
        free(reply.data);
        if (!sent)
            break;
    }
    free(line);
}

/* -- sessions ----------------------------------------------------------------------------------- */

/* The one session that may be open: its directories, its mount and its container process. */
static struct {
    bool open, mounted, home_mounted; /* mounted: the overlay; home_mounted: the session's tmpfs */
    char *home, *upper, *work, *merged;
    size_t layers; /* lower directories l0 ... (at least one) */
    pid_t child;
    FILE *to_child, *from_child;
} session;

static unsigned session_number;

/*
 * Stop the container process and unmount. The session's home is a tmpfs of its
 * own, so unmounting it removes every file the session made, however deep the
 * trees an example built (a walk such as nftw fails on paths past PATH_MAX).
 */
static void close_session(void) {
    if (session.to_child)
        fclose(session.to_child); /* the child sees end of input and exits */
    if (session.from_child)
        fclose(session.from_child);
    if (session.child > 0)
        waitpid(session.child, NULL, 0);
    const char *mounts[2] = {session.mounted ? session.merged : NULL, session.home_mounted ? session.home : NULL};
    for (int index = 0; index < 2; index++)
        if (mounts[index] && umount2(mounts[index], 0) != 0 && umount2(mounts[index], MNT_DETACH) != 0)
            fprintf(stderr, "overlay-driver: cannot unmount %s: %s\n", mounts[index], strerror(errno));
    if (session.home && rmdir(session.home) != 0 && errno != ENOENT)
        fprintf(stderr, "overlay-driver: cannot remove %s: %s\n", session.home, strerror(errno));
    free(session.home);
    free(session.upper);
    free(session.work);
    free(session.merged);
    memset(&session, 0, sizeof session);
}

static char *lower_directory(size_t index) {
    char name[32];
    snprintf(name, sizeof name, "l%zu", index);
    return join_path(session.home, name);
}

/* Fork the container process: chroot into the merged directory, umask 0, serve ops over two pipes. */
static bool start_container(void) {
    int requests[2], replies[2];
    if (pipe2(requests, O_CLOEXEC) != 0)
        return fail("pipe: %s", strerror(errno));
    if (pipe2(replies, O_CLOEXEC) != 0) {
        close(requests[0]);
        close(requests[1]);
        return fail("pipe: %s", strerror(errno));
    }
    lower_count = session.layers;
    lower_fds = allocate(NULL, lower_count * sizeof *lower_fds);
    for (size_t index = 0; index < lower_count; index++) {
        char *directory = lower_directory(index);
        lower_fds[index] = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        free(directory);
    }
    fflush(stdout);
    pid_t parent = getpid(), child = fork();
    if (child == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* die with the driver, and not outlive it if it is gone already */
        if (getppid() != parent)
            _exit(1);
        close(requests[1]);
        close(replies[0]);
        /* The protocol's stdin and stdout are the parent's alone. */
        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 || chroot(session.merged) != 0 ||
            chdir("/") != 0)
            _exit(1);
        umask(0);
        FILE *in = fdopen(requests[0], "r"), *out = fdopen(replies[1], "w");
        if (in == NULL || out == NULL)
            _exit(1);
        serve_container(in, out);
        _exit(0);
    }
    int error = errno;
    for (size_t index = 0; index < lower_count; index++)
        if (lower_fds[index] >= 0)
            close(lower_fds[index]);
    free(lower_fds);
    lower_fds = NULL;
    close(requests[0]);
    close(replies[1]);
    if (child < 0) {
        close(requests[1]);
        close(replies[0]);
        return fail("fork: %s", strerror(error));
    }
    session.child = child;
    session.to_child = fdopen(requests[1], "w");
    session.from_child = fdopen(replies[0], "r");
    if (session.to_child == NULL || session.from_child == NULL)
        return fail("fdopen: %s", strerror(errno));
    return true;
}

/* Ask the container process one thing; its reply line (to free) or NULL. */
static char *ask_container(const char *request) {
    if (session.child <= 0 || !send_line(session.to_child, request))
        return fail("the container process died"), NULL;
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length = getline(&line, &capacity, session.from_child);
    if (length <= 0 || line[length - 1] != '\n') {
        free(line);
        return fail("the container process died"), NULL;
    }
    line[length - 1] = '\0';
    return line;
}

/* {"request": "open", "features": {...}, "layers": [[ENTRY...]...]}: lay out, mount, start the container. */
static bool open_session(const Json *request) {
    bool redirect_dir = false;
    if (session.open)
        return fail("a session is open already: close it first");
    const Json *features = member(request, "features"), *layers = member(request, "layers");
    /* Every feature cowspec names is given on or off; any on but redirect_dir is one hello did not offer. */
    if (features != NULL && features->type != JSON_OBJECT)
        return fail("features: expected a JSON object");
    for (size_t index = 0; features != NULL && index < features->count; index++) {
        const Json *flag = &features->items[index];
        if (flag->type != JSON_BOOL)
            return fail("feature '%s' must be true or false", flag->key);
        if (strcmp(flag->key, "redirect_dir") == 0)
            redirect_dir = flag->boolean;
        else if (flag->boolean)
            return fail("feature '%s' is not supported by this driver (hello did not offer it)", flag->key);
    }
    if (layers == NULL || layers->type != JSON_ARRAY)
        return fail("layers: expected a JSON array");
    for (size_t index = 0; index < layers->count; index++)
        if (layers->items[index].type != JSON_ARRAY)
            return fail("layer %zu: expected a JSON array", index);

    char name[32];
    snprintf(name, sizeof name, "s%u", session_number++);
    session.open = true;
    session.home = join_path(SCRATCH, name);
    session.upper = join_path(session.home, "upper");
    session.work = join_path(session.home, "work");
    session.merged = join_path(session.home, "merged");
    session.layers = layers->count ? layers->count : 1;
    if (mkdir(session.home, 0755) != 0)
        return fail("mkdir %s: %s", session.home, strerror(errno));
    if (mount("cowspec-session", session.home, "tmpfs", 0, "mode=0755") != 0)
        return fail("mount -t tmpfs %s: %s", session.home, strerror(errno));
    session.home_mounted = true;
    for (size_t index = 0; index < session.layers; index++) {
        const Json *layer = index < layers->count ? &layers->items[index] : NULL;
        size_t count = layer ? layer->count : 0;
        LayerEntry *entries = allocate(NULL, count * sizeof *entries);
        bool ok = true;
        char where[64];
        for (size_t number = 0; ok && number < count; number++) {
            snprintf(where, sizeof where, "layer %zu entry %zu", index, number);
            ok = decode_entry(&layer->items[number], where, number, &entries[number]);
            if (!ok)
                count = number + 1; /* free what was decoded, this one included */
        }
        char *directory = lower_directory(index);
        snprintf(where, sizeof where, "layer %zu", index);
        ok = ok && lay_out(entries, count, directory, where);
        free(directory);
        for (size_t number = 0; number < count; number++)
            free(entries[number].data.data);
        free(entries);
        if (!ok)
            return false;
    }
    if (mkdir(session.upper, 0755) != 0 || mkdir(session.work, 0755) != 0 || mkdir(session.merged, 0755) != 0)
        return fail("mkdir in %s: %s", session.home, strerror(errno));

    /* lowerdir lists the layers top first; the feature options are always explicit. */
    Buffer options = {0};
    buffer_text(&options, "lowerdir=");
    for (size_t index = session.layers; index-- > 0;) {
        char *directory = lower_directory(index);
        buffer_format(&options, "%s%s", directory, index ? ":" : "");
        free(directory);
    }
    buffer_format(&options, ",upperdir=%s,workdir=%s,redirect_dir=%s,index=off,metacopy=off", session.upper,
                  session.work, redirect_dir ? "on" : "off");
    bool mounted = mount("overlay", session.merged, "overlay", 0, options.data) == 0;
    if (!mounted)
        fail("mount -t overlay %s -o %s: %s", session.merged, options.data, strerror(errno));
    free(options.data);
    if (!mounted)
        return false;
    session.mounted = true;
    return start_container();
}

/* {"request": "observe"}: the merged tree from inside, the upper tree and the sizes from the host side. */
static bool observe(Buffer *out) {
    char *merged = ask_container("{\"request\": \"merged\"}");
    if (merged == NULL)
        return false;
    if (merged[0] != '[') { /* the container process reports a failure as {"error": ...} */
        Json reply;
        const Json *error;
        if (parse_json(merged, strlen(merged), &reply) && (error = member(&reply, "error")) != NULL &&
            error->type == JSON_STRING)
            fail("observing the merged tree: %s", error->string);
        else
            fail("observing the merged tree: unexpected reply");
        json_free(&reply);
        free(merged);
        return false;
    }
    long long size, lower_size, virtual_size;
    bool ok = true;
    buffer_format(out, "{\"merged\": %s, \"upper\": ", merged);
    free(merged);
    ok = tree_json(session.upper, true, out) && docker_size(session.upper, &size);
    virtual_size = ok ? size : 0;
    for (size_t index = 0; ok && index < session.layers; index++) {
        char *directory = lower_directory(index);
        ok = docker_size(directory, &lower_size);
        virtual_size += lower_size;
        free(directory);
    }
    if (ok)
        buffer_format(out, ", \"sizes\": {\"size\": %lld, \"virtual_size\": %lld}}", size, virtual_size);
    return ok;
}

/* -- the protocol ------------------------------------------------------------------------------- */

/* Why the program cannot run here, or NULL once its namespace and scratch tmpfs are ready. */
static const char *unavailable;
static bool prepared;

static void prepare(void) {
    static char reason[512];
    if (prepared || unavailable)
        return;
    if (geteuid() != 0) {
        unavailable = "the overlay driver needs root (mount -t overlay)";
        return;
    }
    FILE *table = fopen("/proc/filesystems", "r");
    char line[256];
    bool overlay = false;
    while (table && fgets(line, sizeof line, table))
        overlay = overlay || strstr(line, "\toverlay\n") != NULL;
    if (table)
        fclose(table);
    if (!overlay) {
        unavailable = "the kernel has no overlay filesystem";
        return;
    }
    /* A mount namespace of our own, private, so nothing we mount is seen outside or outlives us. */
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(reason, sizeof reason, "cannot enter a private mount namespace: %s", strerror(errno));
        unavailable = reason;
        return;
    }
    /* A tmpfs over /tmp, in our namespace only: layers live there, and vanish with the process. */
    if (mount("cowspec", "/tmp", "tmpfs", 0, "mode=0755") != 0 || mkdir(SCRATCH, 0755) != 0) {
        snprintf(reason, sizeof reason, "cannot set up scratch space on /tmp: %s", strerror(errno));
        unavailable = reason;
        return;
    }
    prepared = true;
}

static void error_reply(Buffer *out, const char *message) {
    buffer_text(out, "{\"error\": ");
    add_json_text(out, message);
    buffer_text(out, "}");
}

/* Answer one request line; false when the program should end (after bye). */
static bool handle(const char *line, size_t length, Buffer *out) {
    Json request;
    if (!parse_json(line, length, &request)) {
        error_reply(out, failure);
        return true;
    }
    const Json *kind = member(&request, "request");
    const char *name = kind && kind->type == JSON_STRING ? kind->string : NULL;
    bool going_on = true;
    if (request.type != JSON_OBJECT || name == NULL) {
        error_reply(out, "a request must be a JSON object with a string field \"request\"");
    } else if (strcmp(name, "hello") == 0) {
        prepare();
        buffer_text(out, "{\"protocol\": \"" PROTOCOL "\", \"name\": \"" DRIVER_NAME "\"");
        buffer_text(out, ", \"version\": \"" DRIVER_VERSION);
        for (size_t index = 0; index < BUG_COUNT; index++) /* say which bugs are planted */
            if (*BUGS[index].on)
                buffer_format(out, " +bug %s", BUGS[index].name);
        buffer_text(out, "\"");
        if (unavailable) {
            buffer_text(out, ", \"unavailable\": ");
            add_json_text(out, unavailable);
            buffer_text(out, "}");
        } else {
            buffer_text(out, ", \"levels\": [\"filesystem\"], \"features\": [\"redirect_dir\"]}");
        }
    } else if (strcmp(name, "bye") == 0) {
        buffer_text(out, "{\"ok\": true}");
        going_on = false;
    } else if (strcmp(name, "open") == 0) {
        if (!prepared)
            error_reply(out, unavailable ? unavailable : "open before hello");
        else if (open_session(&request))
            buffer_text(out, "{\"ok\": true}");
        else {
            error_reply(out, failure);
            if (session.open) /* a failed open leaves nothing behind */
                close_session();
        }
    } else if (strcmp(name, "perform") == 0 || strcmp(name, "observe") == 0 || strcmp(name, "close") == 0) {
        if (!session.open) {
            error_reply(out, "no session is open");
        } else if (strcmp(name, "close") == 0) {
            close_session();
            buffer_text(out, "{\"ok\": true}");
        } else if (strcmp(name, "observe") == 0) {
            if (!observe(out)) {
                out->length = 0;
                error_reply(out, failure);
            }
        } else {
            /* The op is checked here (a malformed one is an error, not a result), performed by the
               container process, and its reply goes out as it is. The child gets the request line itself. */
            Op decoded;
            bool valid = decode_op(member(&request, "op"), &decoded);
            free(decoded.data.data);
            char *reply = valid ? ask_container(line) : NULL;
            if (reply)
                buffer_text(out, reply);
            else
                error_reply(out, failure);
            free(reply);
        }
    } else {
        Buffer message = {0};
        buffer_format(&message, "unknown request %s", name);
        error_reply(out, message.data);
        free(message.data);
    }
    json_free(&request);
    return going_on;
}

static void finish(void) {
    if (session.open)
        close_session();
    if (prepared) {
        rmdir(SCRATCH);
        umount2("/tmp", MNT_DETACH);
    }
}

static void usage(FILE *stream) {
    fputs("usage: overlay-driver [--bug=NAME]...\n"
          "A cowspec-driver/1 program (JSON Lines on stdin and stdout) over the kernel's overlayfs; needs root.\n"
          "Planted bugs:\n",
          stream);
    for (size_t index = 0; index < BUG_COUNT; index++)
        fprintf(stream, "  --bug=%-20s %s\n", BUGS[index].name, BUGS[index].what);
}

int main(int argc, char **argv) {
    for (int argument = 1; argument < argc; argument++) {
        const char *given = argv[argument];
        if (strcmp(given, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        size_t index = 0;
        while (index < BUG_COUNT && (strncmp(given, "--bug=", 6) != 0 || strcmp(given + 6, BUGS[index].name) != 0))
            index++;
        if (index == BUG_COUNT) {
            fprintf(stderr, "overlay-driver: unknown argument %s\n", given);
            usage(stderr);
            return 2;
        }
        *BUGS[index].on = true;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* die with cowspec */
    signal(SIGPIPE, SIG_IGN);         /* a dead reader is an error to report, not a signal to die of */
    umask(0);                         /* every mode this program sets is the one it asks for */
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    bool going_on = true;
    while (going_on && (length = getline(&line, &capacity, stdin)) > 0) {
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r'))
            line[--length] = '\0';
        Buffer reply = {0};
        going_on = handle(line, (size_t)length, &reply);
        bool sent = send_line(stdout, reply.data);
        free(reply.data);
        if (!sent)
            break;
    }
    free(line);
    finish();
    return 0;
}
