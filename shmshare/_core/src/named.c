/* Opening a named segment, the common case in one call (naming/attach.py,
 * open_named): the project directory checked, the key file opened and
 * locked, its record read, the segment at its key found and attached.  Run
 * as the allocator of the object that owns the mapping (owned_map.c), so the
 * mapping has its owner from the shmat on.
 *
 * Only the case where everything is as expected is handled here: the project
 * directory is a real directory of this user that nobody else may write to
 * (naming/keys.py make_private_dir), the key file exists and is not locked by
 * anyone, it is the file its path names after the lock is taken, its record
 * names a proj_id and no other IPC namespace than ours, a segment of at least
 * a header's size is at that key, and its identity header is the one the
 * general path accepts (naming/lifecycle.py verified): our magic and layout,
 * the name and kind asked for, the key file's device and inode, not
 * anonymous, its payload inside the segment, the key file's path recorded.
 * Anything else returns SHMS_NAMED_SLOW with nothing left open, locked or
 * attached, and the caller takes the general path, which knows every other
 * case (waiting for the lock, stale key files, crashed creations, creation,
 * the errors to raise).  The key file is unlocked and closed before the
 * call returns; the caller applies the trust rules as on the general path.
 */
#include "shms.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>

#define HEADER_BYTES 4096       /* naming/header.py HEADER_SIZE */

/* The identity header's layout (naming/header.py, little-endian, packed):
 * _FIXED "<8sIIIIQQQQqd16sH", the name after it; the PID namespace words; the
 * inspection words; the mount namespace and the key file's path. */
#define H_VERSION 8
#define H_SIZE 12
#define H_FLAGS 16
#define H_PROJ 20
#define H_DEV 24
#define H_INO 32
#define H_TOKEN 40
#define H_PAYLOAD 48
#define H_PID 56
#define H_CREATED 64
#define H_KIND 72
#define H_NLEN 88
#define H_NAME 90
#define H_PIDNS 2048
#define H_INSPECT 2064
#define H_KEYPATH 2560
#define H_KEYPATH_BYTES (H_KEYPATH + 10)
#define LAYOUT_VERSION 1        /* naming/header.py LAYOUT_VERSION */
#define FLAG_ANONYMOUS 2        /* naming/header.py FLAG_ANONYMOUS */

static uint64_t u64_at(const unsigned char *p, size_t at)
{
    uint64_t v;
    memcpy(&v, p + at, sizeof v);
    return v;
}

static uint32_t u32_at(const unsigned char *p, size_t at)
{
    uint32_t v;
    memcpy(&v, p + at, sizeof v);
    return v;
}

static uint16_t u16_at(const unsigned char *p, size_t at)
{
    uint16_t v;
    memcpy(&v, p + at, sizeof v);
    return v;
}

/* 1 if the header at p is r's object of the key file st, in a segment of
 * seg_size bytes; its fields in out[24..31].  The same checks as Header.read
 * plus lifecycle.verified; anything they would refuse or treat otherwise is 0
 * (the general path then decides). */
static int header_matches(const unsigned char *p, uint64_t seg_size, const struct stat *st,
                          int proj_id, const shms_named_req_t *r, int64_t *out)
{
    size_t nl = strlen(r->name), kl = strlen(r->kind), pl = strlen(r->path);
    uint16_t nlen = u16_at(p, H_NLEN), plen = u16_at(p, H_KEYPATH + 8);
    uint64_t payload = u64_at(p, H_PAYLOAD);
    uint32_t flags = u32_at(p, H_FLAGS);
    if (memcmp(p, "SHMSHARE", 8) || u32_at(p, H_VERSION) != LAYOUT_VERSION ||
        u32_at(p, H_SIZE) != HEADER_BYTES)
        return 0;
    if (nlen != nl || memcmp(p + H_NAME, r->name, nl))
        return 0;
    /* the kind: its bytes, then NULs to the end of the field */
    if (memcmp(p + H_KIND, r->kind, kl))
        return 0;
    for (size_t i = kl; i < SHMS_KIND_MAX; i++)
        if (p[H_KIND + i])
            return 0;
    if (u32_at(p, H_PROJ) != (uint32_t)proj_id)
        return 0;
    if (u64_at(p, H_DEV) != (uint64_t)st->st_dev || u64_at(p, H_INO) != (uint64_t)st->st_ino)
        return 0;
    if (flags & FLAG_ANONYMOUS || payload > seg_size - HEADER_BYTES)
        return 0;
    if (plen != pl || H_KEYPATH_BYTES + pl > HEADER_BYTES ||
        memcmp(p + H_KEYPATH_BYTES, r->path, pl))
        return 0;
    out[24] = flags;
    out[25] = (int64_t)u64_at(p, H_TOKEN);
    out[26] = (int64_t)payload;
    out[27] = (int64_t)u64_at(p, H_PID);
    out[28] = (int64_t)u64_at(p, H_CREATED);   /* a double's bits */
    out[29] = (int64_t)u64_at(p, H_INSPECT);
    out[30] = (int64_t)u64_at(p, H_INSPECT + 8);
    out[31] = (int64_t)u64_at(p, H_KEYPATH);
    return 1;
}

/* What header.py note_pid_namespace does on attach: mark the segment as used
 * from another PID namespace than its creator's (pidns 0: ours is unknown). */
static void note_pid_namespace(unsigned char *p, uint64_t pidns)
{
    uint64_t *words = (uint64_t *)(void *)(p + H_PIDNS);
    if (pidns == 0 || __atomic_load_n(&words[0], __ATOMIC_RELAXED) != pidns)
        __atomic_store_n(&words[1], 1, __ATOMIC_RELAXED);
}

/* The number after tag in a record written by naming/keys.py (KeyRecord.dumps);
 * 0 when missing, -1 when not a number ending a field. */
static long long record_field(const char *rec, int n, const char *tag)
{
    size_t len = strlen(tag);
    const char *p = memmem(rec, (size_t)n, tag, len);
    char *end;
    long long v;
    if (!p)
        return 0;
    p += len;
    v = strtoll(p, &end, 10);
    return end != p && end < rec + n && (*end == ',' || *end == '}') ? v : -1;
}

/* The proj_id of the record, or 0 if it has none or names another IPC
 * namespace than ipcns (KeyRecord.other_namespace: 0 on either side is unknown). */
static int record_proj_id(const char *rec, int n, int64_t ipcns)
{
    long long id = record_field(rec, n, "\"proj_id\": ");
    long long ns = record_field(rec, n, "\"ipcns\": ");
    if (ns < 0 || (ns && ipcns && ns != ipcns))
        return 0;
    return id >= 1 && id <= 255 ? (int)id : 0;
}

/* dir is what naming/keys.py _check_private_dir accepts: a real directory
 * (not a symlink) of this user, without group or other write bits. */
static int private_dir(const char *dir)
{
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
           !(st.st_mode & 022);
}

/* out (SHMS_NAMED_FIELDS words): -1 (the key file's descriptor, closed), dev, ino, file size, proj_id, record
 * length, key, address, then the segment's IPC_STAT (before our shmat) in the
 * order of shms_stat_t, then the header's flags, token, payload size, creator
 * pid, creation time (a double's bits), inspector pid, last pid before the
 * inspection and mount namespace.  Plain words, not a struct: cffi builds a
 * struct type on its first use, a cost the first open of every process would
 * pay. */
int shms_named_open(const shms_named_req_t *r, int64_t *out)
{
    const char *dir = r->dir, *path = r->path;
    struct stat st, now;
    shms_stat_t ds;
    char buf[SHMS_RECORD_MAX + 1];
    ssize_t n;
    int fd, id, proj_id;
    int64_t key;
    void *p;
    out[0] = -1;  /* no descriptor held (see shms_named_release) */
    out[7] = 0;   /* nothing attached */
    if (!private_dir(dir))
        return SHMS_NAMED_SLOW;
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return SHMS_NAMED_SLOW;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return SHMS_NAMED_SLOW;
    }
    /* Unlinked or replaced between open and lock: the general path retries. */
    if (fstat(fd, &st) != 0 || lstat(path, &now) != 0 ||
        st.st_dev != now.st_dev || st.st_ino != now.st_ino)
        goto slow;
    n = pread(fd, buf, sizeof buf, 0);
    if (n <= 0 || n > SHMS_RECORD_MAX)
        goto slow;
    proj_id = record_proj_id(buf, (int)n, r->ipcns);
    if (!proj_id)
        goto slow;
    /* ftok(path, proj_id), from the inode just checked (glibc and musl alike:
     * proj_id in the top byte, the device's low byte, the inode's low 16 bits). */
    key = (int64_t)(int32_t)(((uint32_t)proj_id & 0xff) << 24 |
                             ((uint32_t)st.st_dev & 0xff) << 16 |
                             ((uint32_t)st.st_ino & 0xffff));
    id = shmget((key_t)key, 0, 0);
    if (id < 0 || shms_stat(id, &ds) != 0 || ds.size < HEADER_BYTES)
        goto slow;
    p = shmat(id, NULL, r->readonly ? SHM_RDONLY : 0);
    if (p == (void *)-1)
        goto slow;
    if (!header_matches(p, ds.size, &st, proj_id, r, out)) {
        shmdt(p);
        goto slow;
    }
    if (!r->readonly)
        note_pid_namespace(p, r->pidns);
    /* Attached: a remover that takes the lock from now on counts us in nattch,
     * so nothing after this needs it -- the key file goes here, and the caller
     * holds nothing but the mapping (whose owner is built right after this). */
    flock(fd, LOCK_UN);
    close(fd);
    out[0] = -1;
    out[1] = (int64_t)st.st_dev;
    out[2] = (int64_t)st.st_ino;
    out[3] = (int64_t)st.st_size;
    out[4] = proj_id;
    out[5] = n;
    out[6] = key;
    out[7] = (int64_t)(uintptr_t)p;
    out[8] = ds.key;
    out[9] = ds.shmid;
    out[10] = (int64_t)ds.size;
    out[11] = ds.uid;
    out[12] = ds.gid;
    out[13] = ds.cuid;
    out[14] = ds.cgid;
    out[15] = ds.mode;
    out[16] = ds.dest;
    out[17] = ds.locked;
    out[18] = ds.cpid;
    out[19] = ds.lpid;
    out[20] = (int64_t)ds.nattch;
    out[21] = ds.atime;
    out[22] = ds.dtime;
    out[23] = ds.ctime;
    return 0;
slow:
    flock(fd, LOCK_UN);
    close(fd);
    return SHMS_NAMED_SLOW;
}

/* Unlock and close the key file a successful shms_named_open left in out[0],
 * once: one C call, so no Python-level interrupt can land between the unlock,
 * the close and forgetting the descriptor.  Also the destructor of the out
 * array (ffi.gc), so an out array dropped by an interrupt releases it too. */
void shms_named_release(void *words)
{
    int64_t *out = words;
    int fd = (int)out[0];
    if (out[0] < 0)
        return;
    out[0] = -1;
    flock(fd, LOCK_UN);
    close(fd);
}

/* The words of a named open, made by cffi's allocator (_core/named.py):
 * zeroed but for out[0] = -1 (no descriptor), so that dropping them at any
 * moment -- before the open, or after it left the key file open and locked
 * -- releases exactly what they hold, with shms_named_free. */
void *shms_named_words(size_t size)
{
    int64_t *out = size >= sizeof *out ? calloc(1, size) : NULL;
    if (out)
        out[0] = -1;
    return out;
}

void shms_named_free(void *words)
{
    shms_named_release(words);
    free(words);
}

/* open(2) into cell[0] (-1 before and on failure); 0 or errno.  With the cell
 * owned by shms_named_release (ffi.gc) before this call, the descriptor has an
 * owner from the instant it exists: no interrupt can leak it. */
int shms_open_fd(const char *path, int flags, int mode, void *words)
{
    int64_t *cell = words;
    int fd = open(path, flags, (mode_t)mode);
    if (fd < 0)
        return errno;
    cell[0] = fd;
    return 0;
}
