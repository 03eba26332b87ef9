;; A task trying to hold sockets (wasi:sockets), which the sandbox denies:
;; in `execute` it creates SOCKETS TCP and SOCKETS UDP sockets, keeping any
;; it gets; the first creation that succeeds traps. The test fills in
;; SOCKETS.
(component $C
  (import "cronwerk:task/types@0.1.0" (instance $types
    (type $datetime' (record
      (field "seconds" s64)
      (field "nanoseconds" u32)))
    (export "datetime" (type $datetime (eq $datetime')))

    (type $trigger' (enum "schedule" "manual" "broadcast" "retry"))
    (export "trigger" (type $trigger (eq $trigger')))

    (type $task-info' (record
      (field "identifier" string)
      (field "display-name" string)
      (field "description" string)
      (field "version" string)
      (field "default-schedule" (option string))))
    (export "task-info" (type (eq $task-info')))

    (type $run-context' (record
      (field "configuration-name" string)
      (field "identifier" string)
      (field "run-id" string)
      (field "trigger" $trigger)
      (field "scheduled-for" (option $datetime))
      (field "last-run" (option $datetime))
      (field "next-run" (option $datetime))
      (field "run-count" u64)
      (field "instance-name" string)
      (field "properties" (list (tuple string string)))))
    (export "run-context" (type (eq $run-context')))

    (type $payload' (record
      (field "target" string)
      (field "text" string)
      (field "data" (list u8))))
    (export "payload" (type (eq $payload')))
  ))
  (alias export $types "task-info" (type $task-info))
  (alias export $types "run-context" (type $run-context))
  (alias export $types "payload" (type $payload))


  (import "wasi:sockets/network@0.2.0" (instance $network
    (type $error-code' (enum
      "unknown" "access-denied" "not-supported" "invalid-argument"
      "out-of-memory" "timeout" "concurrency-conflict" "not-in-progress"
      "would-block" "invalid-state" "new-socket-limit" "address-not-bindable"
      "address-in-use" "remote-unreachable" "connection-refused"
      "connection-reset" "connection-aborted" "datagram-too-large"
      "name-unresolvable" "temporary-resolver-failure"
      "permanent-resolver-failure"))
    (export "error-code" (type (eq $error-code')))
    (type $family' (enum "ipv4" "ipv6"))
    (export "ip-address-family" (type (eq $family')))))
  (alias export $network "error-code" (type $error-code))
  (alias export $network "ip-address-family" (type $family))
  (import "wasi:sockets/tcp@0.2.0" (instance $tcp
    (export "tcp-socket" (type (sub resource)))))
  (alias export $tcp "tcp-socket" (type $tcp-socket))
  (import "wasi:sockets/tcp-create-socket@0.2.0" (instance $tcp-create
    (alias outer $C $error-code (type $ec'))
    (export "error-code" (type $ec (eq $ec')))
    (alias outer $C $family (type $f'))
    (export "ip-address-family" (type $f (eq $f')))
    (alias outer $C $tcp-socket (type $s'))
    (export "tcp-socket" (type $s (eq $s')))
    (export "create-tcp-socket" (func
      (param "address-family" $f) (result (result (own $s) (error $ec)))))))
  (alias export $tcp-create "create-tcp-socket" (func $create-tcp))
  (import "wasi:sockets/udp@0.2.0" (instance $udp
    (export "udp-socket" (type (sub resource)))))
  (alias export $udp "udp-socket" (type $udp-socket))
  (import "wasi:sockets/udp-create-socket@0.2.0" (instance $udp-create
    (alias outer $C $error-code (type $ec'))
    (export "error-code" (type $ec (eq $ec')))
    (alias outer $C $family (type $f'))
    (export "ip-address-family" (type $f (eq $f')))
    (alias outer $C $udp-socket (type $s'))
    (export "udp-socket" (type $s (eq $s')))
    (export "create-udp-socket" (func
      (param "address-family" $f) (result (result (own $s) (error $ec)))))))
  (alias export $udp-create "create-udp-socket" (func $create-udp))

  (core module $Memory
    (memory (export "memory") 2)
    (global $heap (mut i32) (i32.const 65536))
    ;; bump allocator after the first page (only the host's copies of
    ;; execute's arguments land here)
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
        (then (drop (memory.grow (i32.const 16)))))
      (local.get $ptr)))
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "memory" (core memory $mem))
  (alias core export $memory "realloc" (core func $realloc))

  (core func $create-tcp-lowered (canon lower (func $create-tcp) (memory $mem)))
  (core func $create-udp-lowered (canon lower (func $create-udp) (memory $mem)))

  (core module $Task
    (import "env" "memory" (memory 1))
    (import "sockets" "tcp" (func $create-tcp (param i32 i32)))
    (import "sockets" "udp" (func $create-udp (param i32 i32)))
    (data (i32.const 1024) "Acme.SockHog")   ;; 12 bytes
    (data (i32.const 1048) "done")           ;;  4 bytes

    (func $hog
      (local $i i32)
      (block $done
        (loop $sockets
          (br_if $done (i32.ge_u (local.get $i) (i32.const SOCKETS)))
          ;; create-tcp-socket(ipv4) -> 2048; a socket (tag 0) traps
          (call $create-tcp (i32.const 0) (i32.const 2048))
          (if (i32.eqz (i32.load8_u (i32.const 2048))) (then unreachable))
          (call $create-udp (i32.const 0) (i32.const 2048))
          (if (i32.eqz (i32.load8_u (i32.const 2048))) (then unreachable))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $sockets))))

    (func (export "describe") (result i32)
      (i32.store offset=0  (i32.const 256) (i32.const 1024))
      (i32.store offset=4  (i32.const 256) (i32.const 12))
      (i32.store offset=8  (i32.const 256) (i32.const 1024))
      (i32.store offset=12 (i32.const 256) (i32.const 12))
      (i32.store offset=16 (i32.const 256) (i32.const 1024))
      (i32.store offset=20 (i32.const 256) (i32.const 12))
      (i32.store offset=24 (i32.const 256) (i32.const 1048))
      (i32.store offset=28 (i32.const 256) (i32.const 4))
      (i32.store8 offset=32 (i32.const 256) (i32.const 0))
      (i32.const 256))

    (func (export "execute") (param i32) (result i32)
      (call $hog)
      (i32.store8 offset=0 (i32.const 320) (i32.const 0))
      (i32.store  offset=4 (i32.const 320) (i32.const 1048))
      (i32.store  offset=8 (i32.const 320) (i32.const 4))
      (i32.const 320))
  )
  (core instance $task (instantiate $Task
    (with "env" (instance (export "memory" (memory $mem))))
    (with "sockets" (instance
      (export "tcp" (func $create-tcp-lowered))
      (export "udp" (func $create-udp-lowered))))))

  (type $describe-type (func (result $task-info)))
  (type $execute-type (func
    (param "context" $run-context)
    (param "payload" (option $payload))
    (result (result string (error string)))))
  (func $describe (type $describe-type)
    (canon lift (core func $task "describe")
      (memory $mem) (realloc $realloc) string-encoding=utf8))
  (func $execute (type $execute-type)
    (canon lift (core func $task "execute")
      (memory $mem) (realloc $realloc) string-encoding=utf8))
  (instance $task-instance
    (export "task-info" (type $task-info))
    (export "run-context" (type $run-context))
    (export "payload" (type $payload))
    (export "describe" (func $describe))
    (export "execute" (func $execute)))
  (export "cronwerk:task/task@0.1.0" (instance $task-instance))
)
