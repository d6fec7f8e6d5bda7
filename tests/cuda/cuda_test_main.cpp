// main() of the CUDA op tests. Without a CUDA device every test reports itself skipped, by
// name and loudly, through ctest's SKIP_RETURN_CODE (77); listing the tests needs no device,
// so ctest still registers each one.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  bool listing = false;
  const char* filter = "*";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--gtest_list_tests") == 0) listing = true;
    if (std::strncmp(argv[i], "--gtest_filter=", 15) == 0) filter = argv[i] + 15;
  }
  int devices = 0;
  if (!listing && (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)) {
    std::fprintf(stderr, "SKIPPED %s: no CUDA device on this machine (the CUDA code was compiled; "
                 "run the GPU bundle on a GPU host to execute it)\n", filter);
    return 77;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
