;; A hostile task for the host-resource caps: it creates `fields` handles
;; (wasi:http headers) and fills each with header bytes, keeping them all,
;; in `describe` or in `execute`. The test fills in HOG_IN_DESCRIBE (0/1),
;; HANDLES, APPENDS (per handle) and VALUE_BYTES (per append, <= 60000).
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


  (import "wasi:http/types@0.2.0" (instance $http
    (export "fields" (type $fields (sub resource)))
    (type $he' (variant (case "invalid-syntax") (case "forbidden") (case "immutable")))
    (export "header-error" (type $he (eq $he')))
    (export "[constructor]fields" (func (result (own $fields))))
    (export "[method]fields.append" (func
      (param "self" (borrow $fields)) (param "name" string) (param "value" (list u8))
      (result (result (error $he)))))
  ))
  (alias export $http "[constructor]fields" (func $fields-new))
  (alias export $http "[method]fields.append" (func $fields-append))

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

  (core func $new-lowered (canon lower (func $fields-new)))
  (core func $append-lowered
    (canon lower (func $fields-append) (memory $mem) string-encoding=utf8))

  (core module $Task
    (import "env" "memory" (memory 1))
    (import "http" "new" (func $new (result i32)))
    (import "http" "append" (func $append (param i32 i32 i32 i32 i32 i32)))
    (data (i32.const 1024) "Acme.HostHog")   ;; 12 bytes
    (data (i32.const 1040) "x-pad")          ;;  5 bytes
    (data (i32.const 1048) "kept")           ;;  4 bytes

    (func $hog
      (local $i i32) (local $j i32) (local $h i32)
      ;; the header value: VALUE_BYTES of 'a' at 4096
      (memory.fill (i32.const 4096) (i32.const 97) (i32.const VALUE_BYTES))
      (block $done
        (loop $handles
          (br_if $done (i32.ge_u (local.get $i) (i32.const HANDLES)))
          (local.set $h (call $new))
          (local.set $j (i32.const 0))
          (block $full
            (loop $appends
              (br_if $full (i32.ge_u (local.get $j) (i32.const APPENDS)))
              (call $append (local.get $h) (i32.const 1040) (i32.const 5)
                (i32.const 4096) (i32.const VALUE_BYTES) (i32.const 512))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br $appends)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $handles))))

    (func (export "describe") (result i32)
      (if (i32.const HOG_IN_DESCRIBE) (then (call $hog)))
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
    (with "http" (instance
      (export "new" (func $new-lowered))
      (export "append" (func $append-lowered))))))

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
