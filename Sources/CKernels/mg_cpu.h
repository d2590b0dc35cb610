// What the kernels' C files share (not part of the module's interface).
#ifndef MG_CPU_H
#define MG_CPU_H

/// Defines `int name(void)`: 1 when this CPU supports the given `__builtin_cpu_supports` test,
/// checked once, else 0.
#define MG_CPU_FEATURE(name, supported) \
    int name(void) { \
        static int state = -1; \
        if (state < 0) { \
            __builtin_cpu_init(); \
            state = (supported) ? 1 : 0; \
        } \
        return state; \
    }

#endif
