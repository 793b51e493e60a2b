/* Test-only stand-in for bcryptprimitives.dll, which Wine 8.0 does not have.
 *
 * Rust's std (1.78 and later) imports ProcessPrng from bcryptprimitives.dll on Windows, so no
 * current Rust program starts under Wine 8.0 ("bcryptprimitives.dll not found"). This DLL exports
 * ProcessPrng and fills the buffer with advapi32's RtlGenRandom (SystemFunction036), which Wine
 * has. It is put next to the test executables under Wine only; nothing ships it.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c
 */
#include <windows.h>

typedef BOOLEAN(WINAPI *rtl_gen_random)(PVOID buffer, ULONG length);

/* Real ProcessPrng always returns TRUE; here a failing RtlGenRandom is passed on as FALSE. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    static rtl_gen_random gen;
    if (!gen) {
        HMODULE advapi = LoadLibraryA("advapi32.dll");
        if (!advapi)
            return FALSE;
        gen = (rtl_gen_random)(void *)GetProcAddress(advapi, "SystemFunction036");
        if (!gen)
            return FALSE;
    }
    while (len > 0) {
        ULONG chunk = len > 0x7fffffffu ? 0x7fffffffu : (ULONG)len;
        if (!gen(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
