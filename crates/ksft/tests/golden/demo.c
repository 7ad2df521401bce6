// The same five tests as golden.rs, in upstream's kselftest_harness.h.
#include <stdio.h>
#include <unistd.h>

#include "kselftest_harness.h"

FIXTURE(fx) {};
FIXTURE_VARIANT(fx) { int unused; };
FIXTURE_VARIANT_ADD(fx, one) {};
FIXTURE_VARIANT_ADD(fx, two) {};
FIXTURE_SETUP(fx) {}
FIXTURE_TEARDOWN(fx) {}

TEST_F(fx, pass)
{
	printf("doing the work\n");
}

TEST_F(fx, skip_plain)
{
	SKIP(return, "BAR too small (size=0x%x)", 0x800);
}

TEST_F(fx, skip_newline)
{
	SKIP(return, "Device does not support reset\n");
}

TEST_F(fx, fails)
{
	ASSERT_EQ(1 + 1, 3);
}

TEST_F_TIMEOUT(fx, hangs, 1)
{
	sleep(30);
}

TEST(alone)
{
}

TEST_HARNESS_MAIN
