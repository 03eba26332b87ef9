;; A hostile task for the open-files cap: in `execute` it opens the file
;; `f` of its first granted directory OPENS times (wasi:filesystem
;; `open-at`). MODE 0 keeps every descriptor; MODE 1 drops each one at
;; once; MODE 2 reads each through a stream and drops the descriptor but
;; keeps the stream (which keeps the file open). With SPIN 1 it then spins,
;; holding whatever it kept, until the time limit. An open that fails traps.
;; The test fills in OPENS, MODE (0/1/2) and SPIN (0/1).
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


  (import "wasi:io/streams@0.2.0" (instance $streams
    (export "input-stream" (type (sub resource)))))
  (alias export $streams "input-stream" (type $input-stream))
  (import "wasi:filesystem/types@0.2.0" (instance $fs
    (alias outer $C $input-stream (type $is'))
    (export "input-stream" (type $is (eq $is')))
    (export "descriptor" (type $d (sub resource)))
    (type $path-flags' (flags "symlink-follow"))
    (export "path-flags" (type $pf (eq $path-flags')))
    (type $open-flags' (flags "create" "directory" "exclusive" "truncate"))
    (export "open-flags" (type $of (eq $open-flags')))
    (type $descriptor-flags' (flags "read" "write" "file-integrity-sync"
      "data-integrity-sync" "requested-write-sync" "mutate-directory"))
    (export "descriptor-flags" (type $df (eq $descriptor-flags')))
    (type $error-code' (enum
      "access" "would-block" "already" "bad-descriptor" "busy" "deadlock"
      "quota" "exist" "file-too-large" "illegal-byte-sequence" "in-progress"
      "interrupted" "invalid" "io" "is-directory" "loop" "too-many-links"
      "message-size" "name-too-long" "no-device" "no-entry" "no-lock"
      "insufficient-memory" "insufficient-space" "not-directory" "not-empty"
      "not-recoverable" "unsupported" "no-tty" "no-such-device" "overflow"
      "not-permitted" "pipe" "read-only" "invalid-seek" "text-file-busy"
      "cross-device"))
    (export "error-code" (type $ec (eq $error-code')))
    (export "[method]descriptor.open-at" (func
      (param "self" (borrow $d)) (param "path-flags" $pf) (param "path" string)
      (param "open-flags" $of) (param "flags" $df)
      (result (result (own $d) (error $ec)))))
    (export "[method]descriptor.read-via-stream" (func
      (param "self" (borrow $d)) (param "offset" u64)
      (result (result (own $is) (error $ec)))))))
  (alias export $fs "descriptor" (type $descriptor))
  (alias export $fs "[method]descriptor.open-at" (func $open-at))
  (alias export $fs "[method]descriptor.read-via-stream" (func $read-via-stream))
  (import "wasi:filesystem/preopens@0.2.0" (instance $preopens
    (alias outer $C $descriptor (type $d'))
    (export "descriptor" (type $d (eq $d')))
    (export "get-directories" (func (result (list (tuple (own $d) string)))))))
  (alias export $preopens "get-directories" (func $get-directories))

  (core module $Memory
    (memory (export "memory") 2)
    (global $heap (mut i32) (i32.const 65536))
    ;; bump allocator after the first page (the preopens list and the
    ;; host's copies of execute's arguments land here)
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

  (core func $get-directories-lowered
    (canon lower (func $get-directories) (memory $mem) (realloc $realloc) string-encoding=utf8))
  (core func $open-at-lowered
    (canon lower (func $open-at) (memory $mem) string-encoding=utf8))
  (core func $read-via-stream-lowered (canon lower (func $read-via-stream) (memory $mem)))
  (core func $drop-descriptor (canon resource.drop $descriptor))

  (core module $Task
    (import "env" "memory" (memory 1))
    (import "fs" "get-directories" (func $get-directories (param i32)))
    (import "fs" "open-at" (func $open-at (param i32 i32 i32 i32 i32 i32 i32)))
    (import "fs" "read-via-stream" (func $read-via-stream (param i32 i64 i32)))
    (import "fs" "drop" (func $drop (param i32)))
    (data (i32.const 1024) "Acme.FdHog")     ;; 10 bytes
    (data (i32.const 1040) "f")              ;;  1 byte
    (data (i32.const 1048) "done")           ;;  4 bytes

    (func $hog
      (local $i i32) (local $dir i32) (local $fd i32)
      ;; the preopens: (list (tuple descriptor string)) at 2048
      (call $get-directories (i32.const 2048))
      (if (i32.eqz (i32.load offset=4 (i32.const 2048))) (then unreachable))
      (local.set $dir (i32.load (i32.load (i32.const 2048))))
      (block $done
        (loop $opens
          (br_if $done (i32.ge_u (local.get $i) (i32.const OPENS)))
          ;; open-at(dir, no path flags, "f", no open flags, read) -> 2064
          (call $open-at (local.get $dir) (i32.const 0) (i32.const 1040) (i32.const 1)
            (i32.const 0) (i32.const 1) (i32.const 2064))
          (if (i32.load8_u (i32.const 2064)) (then unreachable))
          (local.set $fd (i32.load offset=4 (i32.const 2064)))
          (if (i32.eq (i32.const MODE) (i32.const 1))
            (then (call $drop (local.get $fd))))
          (if (i32.eq (i32.const MODE) (i32.const 2))
            (then
              (call $read-via-stream (local.get $fd) (i64.const 0) (i32.const 2080))
              (if (i32.load8_u (i32.const 2080)) (then unreachable))
              (call $drop (local.get $fd))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $opens)))
      (if (i32.const SPIN) (then (loop $forever (br $forever)))))

    (func (export "describe") (result i32)
      (i32.store offset=0  (i32.const 256) (i32.const 1024))
      (i32.store offset=4  (i32.const 256) (i32.const 10))
      (i32.store offset=8  (i32.const 256) (i32.const 1024))
      (i32.store offset=12 (i32.const 256) (i32.const 10))
      (i32.store offset=16 (i32.const 256) (i32.const 1024))
      (i32.store offset=20 (i32.const 256) (i32.const 10))
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
    (with "fs" (instance
      (export "get-directories" (func $get-directories-lowered))
      (export "open-at" (func $open-at-lowered))
      (export "read-via-stream" (func $read-via-stream-lowered))
      (export "drop" (func $drop-descriptor))))))

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
