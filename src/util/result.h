// SPDX-License-Identifier: MIT
#pragma once
// Result is part of the public client API; the implementation shares the same type.
#include <debra/result.h>
