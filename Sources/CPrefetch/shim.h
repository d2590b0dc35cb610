// Software prefetch into the L2 cache (Swift has no spelling for it): a hint, it never faults.
static inline void mg_prefetch(const void *address) { __builtin_prefetch(address, 0, 1); }
