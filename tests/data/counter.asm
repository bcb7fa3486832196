; counter.hex, assembled by hand. Every call: slot0 += 1, then LOG1(data = new value,
; topic = caller). Deployed by the engine tests (tests/evm_engine.rs).
;
; init code (12 bytes): copy the 20-byte runtime to memory and return it
  PUSH1 0x14  PUSH1 0x0c  PUSH1 0x00  CODECOPY     ; 60 14 60 0c 60 00 39
  PUSH1 0x14  PUSH1 0x00  RETURN                   ; 60 14 60 00 f3
; runtime (20 bytes)
  PUSH1 0x00  SLOAD  PUSH1 0x01  ADD               ; 60 00 54 60 01 01
  DUP1  PUSH1 0x00  SSTORE                         ; 80 60 00 55
  PUSH1 0x00  MSTORE                               ; 60 00 52
  CALLER  PUSH1 0x20  PUSH1 0x00  LOG1             ; 33 60 20 60 00 a1
  STOP                                             ; 00
