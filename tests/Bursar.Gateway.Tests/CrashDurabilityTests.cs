using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.Data.Sqlite;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The ledger's promise tested as a user breaks it: a real <c>bursar serve</c> process under load from 20 clients is
/// killed with SIGKILL (no cleanup runs), restarted on the same data directory, and every answer a client received must
/// have its ledger row — also when the SQLite file is held under an exclusive lock by another process during the kill.
/// </summary>
[Collection("processes")]
public sealed class CrashDurabilityTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-crash-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task Killed_under_load_and_restarted_every_received_answer_has_its_ledger_row()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        for (var round = 0; round < 2; round++)
        {
            var received = await LoadThenKillAsync(key, TimeSpan.FromMilliseconds(1500 + 700 * round), holdLock: false);
            Assert.True(received.Count > 20, $"round {round}: only {received.Count} answers before the kill");
            await AssertAllRecordedAsync(received, $"round {round}");
        }
    }

    [Fact]
    public async Task Killed_while_another_process_holds_the_database_locked_every_received_answer_has_its_ledger_row()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        var received = await LoadThenKillAsync(key, TimeSpan.FromSeconds(3), holdLock: true);
        Assert.True(received.Count > 20, $"only {received.Count} answers before the kill");
        await AssertAllRecordedAsync(received, "kill during lock");
    }

    private async Task<HashSet<string>> LoadThenKillAsync(string key, TimeSpan loadFor, bool holdLock)
    {
        await using var gateway = await BursarProcess.StartAsync(_dir);
        using var http = new HttpClient { BaseAddress = new Uri(gateway.BaseUrl), Timeout = TimeSpan.FromSeconds(30) };
        SqliteConnection? locker = null;
        if (holdLock)
        {
            // another process's writer holds the file: the gateway's store writes wait (and fail) while answers keep flowing
            locker = new SqliteConnection($"Data Source={Path.Combine(_dir, "bursar.db")};Pooling=False;Default Timeout=30");
            locker.Open();
            using var begin = locker.CreateCommand();
            begin.CommandText = "BEGIN EXCLUSIVE";
            begin.ExecuteNonQuery();
        }
        var received = new HashSet<string>();
        int Count() { lock (received) return received.Count; }
        using var stop = new CancellationTokenSource();
        var clients = Enumerable.Range(0, 20).Select(c => Task.Run(async () =>
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                try
                {
                    var id = await CallAsync(http, key, c, i, stop.Token);
                    if (id is not null) lock (received) received.Add(id);
                }
                catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
                {
                    // the gateway died mid-call: the caller did not get its answer
                }
            }
        })).ToArray();
        // under load for at least loadFor and until answers flow (a loaded CI machine may take seconds to warm up)
        var started = Stopwatch.StartNew();
        await Task.Delay(loadFor);
        while (started.Elapsed < TimeSpan.FromSeconds(30) && Count() < 100) await Task.Delay(100);
        gateway.Kill(); // SIGKILL, mid-load: no shutdown hook, no drain
        await stop.CancelAsync();
        await Task.WhenAll(clients);
        if (locker is not null)
        {
            using (var rollback = locker.CreateCommand())
            {
                rollback.CommandText = "ROLLBACK";
                rollback.ExecuteNonQuery();
            }
            locker.Dispose();
        }
        lock (received) return [.. received];
    }

    /// <summary>One call, alternating dialects and streaming; the request id of an answer read to its last byte, else null.</summary>
    private static async Task<string?> CallAsync(HttpClient http, string key, int client, int i, CancellationToken ct)
    {
        var anthropic = (client + i) % 2 == 0;
        var stream = i % 3 == 0;
        using var req = new HttpRequestMessage(HttpMethod.Post, anthropic ? "/v1/messages" : "/v1/chat/completions");
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        req.Headers.Add("x-bursar-feature", "crash-" + client);
        var prompt = $"client {client} call {i}: summarize why ledgers must be durable";
        req.Content = new StringContent(anthropic
            ? $$"""{"model":"claude-haiku-4-5","max_tokens":40,"stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"{{prompt}}"}]}"""
            : $$"""{"model":"gpt-4o-mini","max_tokens":40,"stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"{{prompt}}"}]}""",
            Encoding.UTF8, "application/json");
        using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct);
        if (resp.StatusCode != HttpStatusCode.OK) return null;
        var body = await resp.Content.ReadAsStringAsync(ct); // throws if the connection dies before the last byte
        var complete = !stream || (anthropic ? body.Contains("message_stop", StringComparison.Ordinal) : body.Contains("[DONE]", StringComparison.Ordinal));
        return complete ? resp.Headers.GetValues("x-bursar-request-id").Single() : null;
    }

    private async Task AssertAllRecordedAsync(HashSet<string> received, string what)
    {
        // the restart replays the journal before it serves
        await using (var again = await BursarProcess.StartAsync(_dir)) { }
        var stored = new HashSet<string>();
        using (var c = new SqliteConnection($"Data Source={Path.Combine(_dir, "bursar.db")};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT id FROM ledger";
            using var r = cmd.ExecuteReader();
            while (r.Read()) stored.Add(r.GetString(0));
        }
        var missing = received.Where(id => !stored.Contains(id)).ToList();
        Assert.True(missing.Count == 0, $"{what}: {missing.Count} of {received.Count} answered calls have no ledger row (e.g. {string.Join(", ", missing.Take(3))})");
    }
}

/// <summary>A <c>bursar</c> process of the built CLI (test.sh builds the solution before the tests).</summary>
internal sealed class BursarProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    private BursarProcess(Process process, string baseUrl)
    {
        _process = process;
        BaseUrl = baseUrl;
    }

    public string BaseUrl { get; }

    public string Log { get { lock (_log) return _log.ToString(); } }

    public static string CliDll
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
            if (dir is null) throw new InvalidOperationException("Bursar.slnx not found above " + AppContext.BaseDirectory);
            var config = AppContext.BaseDirectory.Contains("/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
            var dll = Path.Combine(dir.FullName, "src", "Bursar.Cli", "bin", config, "net10.0", "bursar.dll");
            if (!File.Exists(dll)) throw new InvalidOperationException($"{dll} is missing: build the solution (dotnet build Bursar.slnx -c {config}) before these tests.");
            return dll;
        }
    }

    private static ProcessStartInfo Info(string? dataDir, params string[] args) => Info(dataDir, null, args);

    private static ProcessStartInfo Info(string? dataDir, IReadOnlyDictionary<string, string>? env, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (env is not null) foreach (var (k, v) in env) info.Environment[k] = v;
        info.ArgumentList.Add(CliDll);
        foreach (var a in args) info.ArgumentList.Add(a);
        if (dataDir is null) return info;
        info.ArgumentList.Add("--data-dir");
        info.ArgumentList.Add(dataDir);
        return info;
    }

    /// <summary>Runs one command to its end: exit code, stdout, stderr.</summary>
    public static async Task<(int Exit, string Out, string Err)> RunAsync(string? dataDir, params string[] args)
    {
        using var p = Process.Start(Info(dataDir, args))!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(timeout.Token);
        return (p.ExitCode, await stdout, await stderr);
    }

    public static async Task<string> CreateKeyAsync(string dataDir, IReadOnlyDictionary<string, string>? env = null, params string[] extra)
    {
        Directory.CreateDirectory(dataDir);
        using var p = Process.Start(Info(dataDir, env, ["keys", "create", "--team", "crash", .. extra]))!;
        var stdout = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.Equal(0, p.ExitCode);
        return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Single(l => l.StartsWith("bsr_", StringComparison.Ordinal));
    }

    public static Task<BursarProcess> StartAsync(string dataDir) => StartAsync(dataDir, FreePort(), "serve", "--urls", "http://127.0.0.1:{port}");

    /// <summary>Starts a long-running command (<c>{port}</c> in an argument becomes <paramref name="port"/>) and waits until it answers /health/live.</summary>
    public static Task<BursarProcess> StartAsync(string dataDir, int port, params string[] args) => StartAsync(dataDir, port, null, args);

    /// <summary>Starts a long-running command with <paramref name="env"/> set (<c>Bursar__Store</c>, ...).</summary>
    public static async Task<BursarProcess> StartAsync(string dataDir, int port, IReadOnlyDictionary<string, string>? env, params string[] args)
    {
        var p = Process.Start(Info(dataDir, env, [.. args.Select(a => a.Replace("{port}", port.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal))]))!;
        var gw = new BursarProcess(p, $"http://127.0.0.1:{port}");
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (gw._log) gw._log.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (gw._log) gw._log.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        for (var i = 0; i < 600; i++)
        {
            if (p.HasExited) throw new InvalidOperationException($"bursar serve exited with {p.ExitCode}:\n{gw.Log}");
            try
            {
                using var r = await http.GetAsync(gw.BaseUrl + "/health/live");
                if (r.IsSuccessStatusCode) return gw;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
            await Task.Delay(100);
        }
        gw.Kill();
        throw new TimeoutException($"bursar serve did not answer /health/live within 30 s:\n{gw.Log}");
    }

    /// <summary>Waits until the process has printed <paramref name="text"/> (stdout or stderr).</summary>
    public async Task WaitForOutputAsync(string text, TimeSpan within)
    {
        var until = DateTime.UtcNow + within;
        while (!Log.Contains(text, StringComparison.Ordinal))
        {
            if (_process.HasExited) throw new InvalidOperationException($"bursar exited with {_process.ExitCode} before printing '{text}':\n{Log}");
            if (DateTime.UtcNow > until) throw new TimeoutException($"bursar did not print '{text}' within {within}:\n{Log}");
            await Task.Delay(50);
        }
    }

    public bool HasExited => _process.HasExited;

    public int Pid => _process.Id;

    public int ExitCode => _process.ExitCode;

    /// <summary>SIGTERM, as a service manager or Ctrl+C sends: the process should stop gracefully on its own.</summary>
    public async Task<bool> TerminateAsync(TimeSpan within)
    {
        using (var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) await kill.WaitForExitAsync();
        using var timeout = new CancellationTokenSource(within);
        try { await _process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException) { return false; }
        return true;
    }

    /// <summary>SIGKILL: the process gets no chance to flush or clean up.</summary>
    public void Kill()
    {
        if (_process.HasExited) return;
        _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    public static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process.Dispose();
        return ValueTask.CompletedTask;
    }
}
