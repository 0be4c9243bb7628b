/* hanasc clock probe: the clock this x86-64 core runs at, from a chain of dependent adds (one cycle each
 * on every x86-64 core LLVM models) timed in thread CPU time, so time slices other processes take on a
 * shared machine do not count.  Prints the best rate of 5 runs in Hz.  Built by
 * cost_models/simulation/host_runner.py with the host C compiler. */
#include <stdio.h>
#include <time.h>

int main(void) {
  const unsigned long n = 100000000UL;
  double best = 0.0;
  for (int run = 0; run < 5; run++) {
    unsigned long x = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (unsigned long i = 0; i < n; i++) {
      __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                       "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    double seconds = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    if (8.0 * (double)n / seconds > best) best = 8.0 * (double)n / seconds;
  }
  printf("%.0f\n", best);
  return 0;
}
