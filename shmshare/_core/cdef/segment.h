/* cffi declarations for segment.c (see src/shms.h for the documentation). */
#define IPC_PRIVATE ...
#define IPC_CREAT ...
#define IPC_EXCL ...
#define SHM_HUGETLB ...
#define SHM_NORESERVE ...

typedef struct {
    int64_t key;
    int64_t shmid;
    uint64_t size;
    uint32_t uid, gid, cuid, cgid;
    uint32_t mode;
    int32_t  dest;
    int32_t  locked;
    int64_t  cpid, lpid;
    uint64_t nattch;
    int64_t  atime, dtime, ctime;
} shms_stat_t;

typedef struct {
    uint64_t shmmax, shmmin, shmmni, shmseg, shmall;
    uint64_t used_ids, shm_tot, shm_rss, shm_swp;
    uint64_t page_size;
} shms_limits_t;

int shms_ftok(const char *path, int proj_id, int64_t *key_out);
int shms_shmget(int64_t key, uint64_t size, int flags, int64_t *shmid_out);
int shms_shmat(int64_t shmid, int readonly, void **addr_out);
int shms_shmdt(void *addr);
void shms_unmap(void *addr);
int shms_populate(void *addr, uint64_t len);
uint64_t shms_atomic_add(void *addr, uint64_t v);
int shms_stat(int64_t shmid, shms_stat_t *out);
int shms_set(int64_t shmid, int64_t uid, int64_t gid, int64_t mode);
int shms_rmid(int64_t shmid);
int shms_memlock(int64_t shmid, int lock);
int shms_limits(shms_limits_t *out);
int shms_list_ids(int64_t *ids, int cap, int *n_out);
