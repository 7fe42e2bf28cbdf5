"""The file layer: how aidkd writes and reads what it keeps (atomic writes, checkpoints, safetensors, JSON records)
and which folders it may write into or delete (:mod:`.rundir`). It imports nothing of aidkd but its errors."""
