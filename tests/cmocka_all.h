/* cmocka needs these system headers before its own. */
#ifndef IKV_TESTS_CMOCKA_ALL_H
#define IKV_TESTS_CMOCKA_ALL_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#endif
