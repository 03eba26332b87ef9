;; A task hoarding outgoing HTTP connections: in `execute` it sends
;; REQUESTS requests for / to AUTHORITY (host:port, AUTHORITY_LEN bytes)
;; through wasi:http, keeps every future response unread, then spins until
;; the time limit. The test fills in REQUESTS, AUTHORITY and AUTHORITY_LEN.
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


  (import "wasi:http/types@0.2.0" (instance $http
    (export "fields" (type $fields (sub resource)))
    (export "outgoing-request" (type $req (sub resource)))
    (export "request-options" (type $opts (sub resource)))
    (export "future-incoming-response" (type $fut (sub resource)))
    (type $dns' (record (field "rcode" (option string)) (field "info-code" (option u16))))
    (export "DNS-error-payload" (type $dns (eq $dns')))
    (type $tls' (record (field "alert-id" (option u8)) (field "alert-message" (option string))))
    (export "TLS-alert-received-payload" (type $tls (eq $tls')))
    (type $fsp' (record (field "field-name" (option string)) (field "field-size" (option u32))))
    (export "field-size-payload" (type $fsp (eq $fsp')))
    (type $ec' (variant
      (case "DNS-timeout")
      (case "DNS-error" $dns)
      (case "destination-not-found")
      (case "destination-unavailable")
      (case "destination-IP-prohibited")
      (case "destination-IP-unroutable")
      (case "connection-refused")
      (case "connection-terminated")
      (case "connection-timeout")
      (case "connection-read-timeout")
      (case "connection-write-timeout")
      (case "connection-limit-reached")
      (case "TLS-protocol-error")
      (case "TLS-certificate-error")
      (case "TLS-alert-received" $tls)
      (case "HTTP-request-denied")
      (case "HTTP-request-length-required")
      (case "HTTP-request-body-size" (option u64))
      (case "HTTP-request-method-invalid")
      (case "HTTP-request-URI-invalid")
      (case "HTTP-request-URI-too-long")
      (case "HTTP-request-header-section-size" (option u32))
      (case "HTTP-request-header-size" (option $fsp))
      (case "HTTP-request-trailer-section-size" (option u32))
      (case "HTTP-request-trailer-size" $fsp)
      (case "HTTP-response-incomplete")
      (case "HTTP-response-header-section-size" (option u32))
      (case "HTTP-response-header-size" $fsp)
      (case "HTTP-response-body-size" (option u64))
      (case "HTTP-response-trailer-section-size" (option u32))
      (case "HTTP-response-trailer-size" $fsp)
      (case "HTTP-response-transfer-coding" (option string))
      (case "HTTP-response-content-coding" (option string))
      (case "HTTP-response-timeout")
      (case "HTTP-upgrade-failed")
      (case "HTTP-protocol-error")
      (case "loop-detected")
      (case "configuration-error")
      (case "internal-error" (option string))))
    (export "error-code" (type $ec (eq $ec')))
    (export "[constructor]fields" (func (result (own $fields))))
    (export "[constructor]outgoing-request" (func
      (param "headers" (own $fields)) (result (own $req))))
    (export "[method]outgoing-request.set-authority" (func
      (param "self" (borrow $req)) (param "authority" (option string)) (result (result))))
    (export "[method]outgoing-request.set-path-with-query" (func
      (param "self" (borrow $req)) (param "path-with-query" (option string))
      (result (result))))))
  (alias export $http "outgoing-request" (type $outgoing-request))
  (alias export $http "request-options" (type $request-options))
  (alias export $http "future-incoming-response" (type $future-incoming-response))
  (alias export $http "error-code" (type $error-code))
  (alias export $http "[constructor]fields" (func $fields-new))
  (alias export $http "[constructor]outgoing-request" (func $request-new))
  (alias export $http "[method]outgoing-request.set-authority" (func $set-authority))
  (alias export $http "[method]outgoing-request.set-path-with-query" (func $set-path))
  (import "wasi:http/outgoing-handler@0.2.0" (instance $handler
    (alias outer $C $outgoing-request (type $req'))
    (export "outgoing-request" (type $req (eq $req')))
    (alias outer $C $request-options (type $opts'))
    (export "request-options" (type $opts (eq $opts')))
    (alias outer $C $future-incoming-response (type $fut'))
    (export "future-incoming-response" (type $fut (eq $fut')))
    (alias outer $C $error-code (type $ec'))
    (export "error-code" (type $ec (eq $ec')))
    (export "handle" (func
      (param "request" (own $req)) (param "options" (option (own $opts)))
      (result (result (own $fut) (error $ec)))))))
  (alias export $handler "handle" (func $handle))

  (core module $Memory
    (memory (export "memory") 2)
    (global $heap (mut i32) (i32.const 65536))
    ;; bump allocator after the first page (the host's copies of execute's
    ;; arguments and of error strings land here)
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

  (core func $fields-new-lowered (canon lower (func $fields-new)))
  (core func $request-new-lowered (canon lower (func $request-new)))
  (core func $set-authority-lowered
    (canon lower (func $set-authority) (memory $mem) string-encoding=utf8))
  (core func $set-path-lowered
    (canon lower (func $set-path) (memory $mem) string-encoding=utf8))
  (core func $handle-lowered
    (canon lower (func $handle) (memory $mem) (realloc $realloc) string-encoding=utf8))

  (core module $Task
    (import "env" "memory" (memory 1))
    (import "http" "fields-new" (func $fields-new (result i32)))
    (import "http" "request-new" (func $request-new (param i32) (result i32)))
    (import "http" "set-authority" (func $set-authority (param i32 i32 i32 i32) (result i32)))
    (import "http" "set-path" (func $set-path (param i32 i32 i32 i32) (result i32)))
    (import "http" "handle" (func $handle (param i32 i32 i32 i32)))
    (data (i32.const 1024) "Acme.HttpHog")   ;; 12 bytes
    (data (i32.const 1048) "done")           ;;  4 bytes
    (data (i32.const 1052) "/")              ;;  1 byte
    (data (i32.const 1056) "AUTHORITY")

    (func $hog
      (local $i i32) (local $req i32)
      (block $done
        (loop $requests
          (br_if $done (i32.ge_u (local.get $i) (i32.const REQUESTS)))
          (local.set $req (call $request-new (call $fields-new)))
          (drop (call $set-authority (local.get $req)
            (i32.const 1) (i32.const 1056) (i32.const AUTHORITY_LEN)))
          (drop (call $set-path (local.get $req) (i32.const 1) (i32.const 1052) (i32.const 1)))
          ;; handle(request, no options) -> 2048; the future is kept, and
          ;; a request the host refuses at once traps
          (call $handle (local.get $req) (i32.const 0) (i32.const 0) (i32.const 2048))
          (if (i32.load8_u (i32.const 2048)) (then unreachable))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $requests)))
      (loop $forever (br $forever)))

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
    (with "http" (instance
      (export "fields-new" (func $fields-new-lowered))
      (export "request-new" (func $request-new-lowered))
      (export "set-authority" (func $set-authority-lowered))
      (export "set-path" (func $set-path-lowered))
      (export "handle" (func $handle-lowered))))))

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
