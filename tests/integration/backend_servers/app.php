<?php
// PHP behind the sidecar, under PHP-FPM (through nginx) and `php -S` alike. Routes: see
// __init__.py, plus /touch (docs/backends.md's snippet: add a user, write the session back)
// and /touch-assoc (the snippet the docs used to give, which turns nested {} into []).

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

if ($path === '/healthz') {
    echo 'ok';
    return;
}

if ($path === '/session/grow') {
    $kb = min((int) ($_GET['kb'] ?? 1), 1024);
    $encoded = json_encode(['blob' => str_repeat('x', $kb * 1024)]);
    header('X-Set-Session: ' . $encoded);
    header('Content-Type: application/json');
    echo json_encode(['bytes' => strlen($encoded)]);
    return;
}

if ($path === '/touch') {
    // The docs' snippet: objects stay objects, so {} round-trips as {}.
    $session = json_decode($_SERVER['HTTP_X_SESSION'] ?? '{}');
    if (!$session instanceof stdClass) {
        $session = new stdClass();
    }
    $session->user = 'alice';
    header('X-Set-Session: ' . json_encode($session));
    echo 'ok';
    return;
}

if ($path === '/touch-assoc') {
    // The old snippet: arrays throughout, so an empty nested object comes back as [].
    $session = json_decode($_SERVER['HTTP_X_SESSION'] ?? '{}', true) ?: [];
    $session['user'] = 'alice';
    header('X-Set-Session: ' . json_encode((object) $session));
    echo 'ok';
    return;
}

header('Content-Type: application/json');
echo json_encode([
    'status' => $_SERVER['HTTP_X_SESSION_STATUS'] ?? null,
    'session_raw' => $_SERVER['HTTP_X_SESSION'] ?? null,
]);
