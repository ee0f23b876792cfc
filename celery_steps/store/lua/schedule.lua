-- Arm one timer (the pollers are told when it is now the shard's earliest).
-- KEYS: timers   ARGV: member, due
schedule(KEYS[1], ARGV[1], ARGV[2])
return 1
