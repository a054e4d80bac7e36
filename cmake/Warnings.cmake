# debra_warnings: the warning set every debra target compiles with.
add_library(debra_warnings INTERFACE)
target_compile_options(debra_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
  -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough)
if(DEBRA_WERROR)
  target_compile_options(debra_warnings INTERFACE -Werror)
endif()

# GCC 12 with optimisation takes "literal" + std::string&& for an overlapping memcpy inside libstdc++
# (-Wrestrict; GCC bug 105651, fixed in GCC 13). A false positive, but one that failed Release builds
# with -DDEBRA_WERROR=ON (the policy parser, net::Address, two store tests, a fuzz target).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(debra_warnings INTERFACE -Wno-restrict)
endif()
