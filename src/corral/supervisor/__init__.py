"""Instance supervision: pure state rules, the OS seam, and the asyncio supervisor."""
