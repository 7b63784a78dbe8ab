/* cffi declarations for proc.c (the process table; see its comment). */
uint32_t shms_proc_slots(uint64_t size);
int shms_proc_check(void *table);
int shms_proc_register(void *table, uint32_t nslots, uint32_t *slot, uint32_t *gen);
int shms_proc_alive(const void *table, uint32_t nslots, uint32_t slot, uint32_t gen);
uint32_t shms_proc_pid(const void *table, uint32_t slot);
void shms_proc_know(uint32_t uid, uint32_t index, const void *table, uint32_t nslots);
int shms_proc_token_alive(uint64_t token);
