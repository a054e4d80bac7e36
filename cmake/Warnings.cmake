# debra_warnings: the warning set every debra target compiles with.
add_library(debra_warnings INTERFACE)
target_compile_options(debra_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
  -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough)
if(DEBRA_WERROR)
  target_compile_options(debra_warnings INTERFACE -Werror)
endif()
