/* The dict's counts and its version stripes: what is read about the dict as a
 * whole rather than about one entry (split from dict.c). */
#include "dict_int.h"

uint64_t shms_dict_count(shms_heap_t *h, uint64_t root)
{
    shms_dtab_t *t = shms_dtab_at(h, root);
    return t ? t->n_live : 0;
}

static int len_body(shms_heap_t *h, void *arg)
{
    shms_dop_t *a = arg;
    shms_dtab_t *t;
    int rc = shms_dict_table(h, 0, &t);
    a->res[0] = t ? t->n_live : 0;
    return rc;
}

int shms_dict_len(shms_heap_t *h, uint64_t *res, int held, int64_t timeout_ns)
{
    shms_dop_t a = {.res = res};
    return shms_run_op(h, held, timeout_ns, len_body, &a);
}

/* ------------------------------------------------------- read cache */

static int versions_body(shms_heap_t *h, void *arg)
{
    shms_dtab_t *t;
    int rc = shms_dict_table(h, 0, &t);
    *(const volatile uint64_t **)arg = t ? shms_dict_stripes(h, t) : NULL;
    return rc;
}

/* The version stripes (SHMS_DICT_NVER of them; NULL while the dict has no
 * table), for lock-free cache checks.  The block stays where it is for the
 * life of the dict, in an extent this handle keeps attached. */
int shms_dict_versions(shms_heap_t *h, const volatile uint64_t **out, int held,
                       int64_t timeout_ns)
{
    *out = NULL;
    return shms_run_op(h, held, timeout_ns, versions_body, (void *)out);
}
