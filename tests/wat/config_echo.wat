;; A test task for secret settings: in `execute` it reads its setting
;; `token` (the `config` import), logs "token is VALUE" (event code CONFIG)
;; and returns the same text, or "no token" when the setting is missing.
;; The host must store both with a secret's value replaced by `***`.
;; Built on the layout of example-tasks/wat-hello/task.wat, which explains
;; the canonical ABI details; the retptr of `config.get` holds an
;; option<string>: +0 discriminant (u8), +4 ptr, +8 len.
(component
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

  (import "cronwerk:task/log@0.1.0" (instance $log
    (type $level' (enum "trace" "debug" "info" "warning" "error"))
    (export "level" (type $level (eq $level')))
    (type $write' (func
      (param "level" $level)
      (param "event-code" string)
      (param "message" string)))
    (export "write" (func (type $write')))
  ))
  (alias export $log "write" (func $log-write))

  (import "cronwerk:task/config@0.1.0" (instance $config
    (export "get" (func (param "key" string) (result (option string))))
  ))
  (alias export $config "get" (func $config-get))

  (core module $Memory
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    ;; wat-hello's bump allocator: blocks are never freed, each run has
    ;; a fresh instance.
    (func (export "realloc")
      (param $old_ptr i32) (param $old_size i32)
      (param $align i32) (param $new_size i32)
      (result i32)
      (local $ptr i32) (local $end i32) (local $pages i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $new_size)))
      (if (i32.or
            (i32.lt_u (local.get $end) (local.get $ptr))
            (i32.gt_u (local.get $end) (i32.const 0xFFFF0000)))
        (then unreachable))
      (local.set $pages
        (i32.shr_u (i32.add (local.get $end) (i32.const 0xFFFF)) (i32.const 16)))
      (if (i32.gt_u (local.get $pages) (memory.size))
        (then
          (if (i32.eq
                (memory.grow (i32.sub (local.get $pages) (memory.size)))
                (i32.const -1))
            (then unreachable))))
      (global.set $heap (local.get $end))
      (if (local.get $old_size)
        (then
          (memory.copy (local.get $ptr) (local.get $old_ptr) (local.get $old_size))))
      (local.get $ptr))
  )
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "memory" (core memory $mem))
  (alias core export $memory "realloc" (core func $realloc))

  (core func $write-lowered
    (canon lower (func $log-write) (memory $mem) string-encoding=utf8))
  (core func $get-lowered
    (canon lower (func $config-get) (memory $mem) (realloc $realloc) string-encoding=utf8))

  (core module $Task
    (import "env" "memory" (memory 1))
    (import "env" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "log" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "config" "get" (func $get (param i32 i32 i32)))

    (data (i32.const 1024) "Cronwerk.Test.ConfigEcho")      ;; 24 bytes
    (data (i32.const 1056) "Config echo")                   ;; 11 bytes
    (data (i32.const 1072) "Logs its setting 'token' and returns it") ;; 39 bytes
    (data (i32.const 1120) "1.0.0")                         ;;  5 bytes
    (data (i32.const 1128) "token")                         ;;  5 bytes
    (data (i32.const 1136) "CONFIG")                        ;;  6 bytes
    (data (i32.const 1144) "token is ")                     ;;  9 bytes
    (data (i32.const 1160) "no token")                      ;;  8 bytes

    (func (export "describe") (result i32)
      (i32.store offset=0  (i32.const 256) (i32.const 1024))
      (i32.store offset=4  (i32.const 256) (i32.const 24))
      (i32.store offset=8  (i32.const 256) (i32.const 1056))
      (i32.store offset=12 (i32.const 256) (i32.const 11))
      (i32.store offset=16 (i32.const 256) (i32.const 1072))
      (i32.store offset=20 (i32.const 256) (i32.const 39))
      (i32.store offset=24 (i32.const 256) (i32.const 1120))
      (i32.store offset=28 (i32.const 256) (i32.const 5))
      (i32.store8 offset=32 (i32.const 256) (i32.const 0))
      (i32.store offset=36 (i32.const 256) (i32.const 0))
      (i32.store offset=40 (i32.const 256) (i32.const 0))
      (i32.const 256))

    ;; Returns ok(text) through the area at 320, after logging text.
    (func $say (param $ptr i32) (param $len i32) (result i32)
      (call $write (i32.const 2) (i32.const 1136) (i32.const 6)
        (local.get $ptr) (local.get $len))
      (i32.store8 offset=0 (i32.const 320) (i32.const 0))
      (i32.store  offset=4 (i32.const 320) (local.get $ptr))
      (i32.store  offset=8 (i32.const 320) (local.get $len))
      (i32.const 320))

    (func (export "execute") (param $args i32) (result i32)
      (local $ptr i32) (local $len i32) (local $buf i32)
      (call $get (i32.const 1128) (i32.const 5) (i32.const 384))
      (if (i32.eqz (i32.load8_u (i32.const 384)))
        (then (return (call $say (i32.const 1160) (i32.const 8)))))
      (local.set $ptr (i32.load offset=4 (i32.const 384)))
      (local.set $len (i32.load offset=8 (i32.const 384)))
      ;; "token is " followed by the value, in a fresh block.
      (local.set $buf
        (call $realloc (i32.const 0) (i32.const 0) (i32.const 1)
          (i32.add (local.get $len) (i32.const 9))))
      (memory.copy (local.get $buf) (i32.const 1144) (i32.const 9))
      (memory.copy (i32.add (local.get $buf) (i32.const 9)) (local.get $ptr) (local.get $len))
      (call $say (local.get $buf) (i32.add (local.get $len) (i32.const 9))))
  )
  (core instance $task (instantiate $Task
    (with "env" (instance
      (export "memory" (memory $mem))
      (export "realloc" (func $realloc))))
    (with "log" (instance (export "write" (func $write-lowered))))
    (with "config" (instance (export "get" (func $get-lowered))))))

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
