/* Test shim for wine 8 (Debian 12), never shipped: Rust's std on Windows draws randomness from
 * ProcessPrng in bcryptprimitives.dll, which every Windows 10+ has but wine 8.0 lacks. Placed
 * beside the smoke .exe (scripts/test), it forwards to BCryptGenRandom, which wine has. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  return BCryptGenRandom(NULL, data, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0;
}
