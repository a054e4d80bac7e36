# Every build option of debra, in one place.
option(DEBRA_BUILD_TESTS "Build the GoogleTest suites and register them with CTest" ON)
option(DEBRA_BUILD_BENCH "Build the micro-benchmarks and load tools (bench/)" ON)
option(DEBRA_WERROR "Treat compiler warnings as errors" OFF)
option(DEBRA_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(DEBRA_TSAN "Build with ThreadSanitizer (not with DEBRA_SANITIZE): the router's threads" OFF)
option(DEBRA_FUZZ "Build libFuzzer targets (needs clang)" OFF)
set(DEBRA_MALLOC "tcmalloc" CACHE STRING
    "The allocator the executables (debra-server, debra, debra-nats-load) link: tcmalloc (gperftools' tcmalloc_minimal) or system (glibc's); sanitizer builds use the sanitizer's")
set_property(CACHE DEBRA_MALLOC PROPERTY STRINGS tcmalloc system)
set(DEBRA_FUZZ_SECONDS 60 CACHE STRING "How long the CTest libFuzzer run (DEBRA_FUZZ) lasts, in seconds")
set(DEBRA_QUINN_CLIENT "" CACHE FILEPATH
    "Path of interop/quinn-legacy-client's binary; when set, CTest runs the quinn interop test")
