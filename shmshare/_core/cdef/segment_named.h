/* cffi declarations for named.c (see src/shms.h and src/named.c). */
#define SHMS_RECORD_MAX ...
#define SHMS_NAMED_SLOW ...
typedef struct {
    int32_t  fd;
    uint64_t dev, ino, fsize;
    int32_t  proj_id;
    int32_t  nread;
    int64_t  key, shmid;
    void    *addr;
    shms_stat_t st;
    char     record[256];
} shms_named_t;
int shms_named_open(const char *path, int readonly, shms_named_t *out);
