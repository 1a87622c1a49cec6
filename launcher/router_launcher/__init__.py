"""The local Triton server launcher (router-serve), the stub watchdog and process readings: runs outside Triton."""
