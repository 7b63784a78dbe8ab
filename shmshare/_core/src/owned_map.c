/* Mappings owned from their shmat on (_core/__init__.py owned_map).
 *
 * A mapping must have an owner -- an object whose destructor detaches it --
 * from the instant shmat returns: a signal handler that raises can land after
 * any C call returns to Python, and a mapping returned as a plain address and
 * then given to ffi.gc would stay attached until the process exits if the
 * interrupt came first.  cffi makes such an owner without any Python in
 * between: an allocator of ffi.new_allocator(alloc, free) gets its memory by
 * calling alloc and frees it with free, and the object it returns is built in
 * C right after alloc returns.  Here alloc is shms_map_alloc, which attaches,
 * and free is shms_unmap (segment.c), which detaches.
 *
 * alloc receives only a size, so what to attach is said first, by
 * shms_map_shmat or shms_map_named: they store the request in this thread and
 * return its ticket, which the caller passes as the size (the array length
 * of its allocation).  shms_map_alloc carries out the request only if the
 * ticket is the current one, and at most once.  An interrupt between the two
 * calls leaves a request nobody carries out; a signal handler that makes a
 * request of its own in between takes the ticket, and the interrupted
 * caller's allocation then finds its request not run (status
 * SHMS_MAP_NOT_RUN) and makes it again.  A request's pointers are used only
 * while its own ticket's allocation runs, when its caller still holds them.
 */
#include "shms.h"
#include <errno.h>
#include <limits.h>
#include <string.h>

enum { REQ_NONE, REQ_SHMAT, REQ_NAMED };

static __thread struct {
    int op;
    int readonly;
    int64_t ticket;
    int64_t shmid;
    int64_t *status;            /* REQ_SHMAT: 0 or errno;  REQ_NAMED: out */
    shms_named_req_t named;
} req;
static __thread int64_t tickets;

/* Tickets are array lengths (one byte each): kept small and never 0. */
static int64_t next_ticket(int op)
{
    tickets = tickets % 0x3fffffff + 1;
    req.op = op;
    req.ticket = tickets;
    return tickets;
}

int64_t shms_map_shmat(int64_t shmid, int readonly, int64_t *status)
{
    status[0] = SHMS_MAP_NOT_RUN;
    req.shmid = shmid;
    req.readonly = readonly;
    req.status = status;
    return next_ticket(REQ_SHMAT);
}

/* The request of shms_named_open (named.c); out[SHMS_NAMED_STATUS] gets its
 * result.  The strings are the caller's, kept alive by it until its
 * allocation has run (a pointer each: this thread's request holds no copy,
 * so its first use costs no large thread-local block).  Paths too long for
 * PATH_MAX, names and kinds too long for a header are left to the general
 * path (SLOW). */
int64_t shms_map_named(const char *dir, const char *path, const char *name, const char *kind,
                       int readonly, int64_t ipcns, uint64_t pidns, void *words)
{
    int64_t *out = words;
    shms_named_req_t *r = &req.named;
    out[SHMS_NAMED_STATUS] = SHMS_MAP_NOT_RUN;
    req.status = out;
    if (strlen(dir) >= PATH_MAX || strlen(path) >= PATH_MAX ||
        strlen(name) > SHMS_NAME_MAX || strlen(kind) > SHMS_KIND_MAX) {
        out[SHMS_NAMED_STATUS] = SHMS_NAMED_SLOW;
        req.op = REQ_NONE;
        return 0;               /* a length cffi refuses to allocate with this allocator */
    }
    r->dir = dir;
    r->path = path;
    r->name = name;
    r->kind = kind;
    r->readonly = readonly;
    r->ipcns = ipcns;
    r->pidns = pidns;
    return next_ticket(REQ_NAMED);
}

/* cffi's alloc: the mapping of the request whose ticket this is, or NULL (its
 * status says why; still SHMS_MAP_NOT_RUN if it was not this request). */
void *shms_map_alloc(size_t ticket)
{
    void *p = NULL;
    int rc;
    if (req.op == REQ_NONE || (int64_t)ticket != req.ticket)
        return NULL;
    switch (req.op) {
    case REQ_SHMAT:
        rc = shms_shmat(req.shmid, req.readonly, &p);
        req.status[0] = rc;
        break;
    case REQ_NAMED:
        rc = shms_named_open(&req.named, req.status);
        req.status[SHMS_NAMED_STATUS] = rc;
        if (rc == 0)
            p = (void *)(uintptr_t)req.status[7];
        break;
    }
    req.op = REQ_NONE;
    return p;
}
