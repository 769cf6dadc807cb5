using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Bursar.Testing;

/// <summary>
/// A real PostgreSQL server of its own (initdb in a temporary folder, pg_ctl on a free loopback port), for the tests and the
/// benchmarks (one source file linked into both); test.sh installs Debian's postgresql. PostgreSQL refuses to run as root, so as
/// root the server runs as the unprivileged <c>postgres</c> user (Debian's package makes it) or <c>nobody</c>.
/// </summary>
public class LocalPostgres
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-pg-" + Guid.NewGuid().ToString("N"));
    private string _bin = "";
    private string? _runAs;
    private bool _started;
    private int _databases;

    public int Port { get; private set; }

    /// <summary>The server's version, once started.</summary>
    public string Version { get; private set; } = "?";

    /// <summary>The superuser's connection string to a database (trust authentication on loopback).</summary>
    public string ConnectionString(string database) => $"Host=127.0.0.1;Port={Port};Username=bursar;Database={database};Pooling=true;Timeout=30;Command Timeout=120";

    public async Task StartAsync()
    {
        _bin = FindBin();
        if (Environment.UserName == "root") _runAs = UserExists("postgres") ? "postgres" : "nobody";
        Directory.CreateDirectory(_dir);
        if (_runAs is not null && !OperatingSystem.IsWindows())
            File.SetUnixFileMode(_dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute);
        var data = Path.Combine(_dir, "data");
        await RunAsync("initdb", ["-D", data, "-U", "bursar", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        for (var attempt = 0; ; attempt++)
        {
            Port = FreePort();
            try
            {
                await RunAsync("pg_ctl", ["start", "-w", "-t", "60", "-D", data, "-l", Path.Combine(_dir, "server.log"),
                    "-o", $"-h 127.0.0.1 -p {Port} -k {_dir} -c max_connections=200"]);
                _started = true;
                break;
            }
            catch (InvalidOperationException) when (attempt < 2) { /* the port was taken meanwhile: another one */ }
        }
        await using var c = new NpgsqlConnection(ConnectionString("postgres"));
        await c.OpenAsync();
        Version = c.ServerVersion;
    }

    /// <summary>A new, empty database; returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = $"bursar_{Interlocked.Increment(ref _databases)}_{Guid.NewGuid():N}"[..40];
        await using var c = new NpgsqlConnection(ConnectionString("postgres"));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE DATABASE {name}", c);
        await cmd.ExecuteNonQueryAsync();
        return ConnectionString(name);
    }

    /// <summary>Stops the server as a crash would (<c>pg_ctl stop -m immediate</c>: no checkpoint, clients cut off), waits <paramref name="down"/>, and starts it again on the same port and data.</summary>
    public async Task CrashAndRestartAsync(TimeSpan down)
    {
        var data = Path.Combine(_dir, "data");
        await RunAsync("pg_ctl", ["stop", "-w", "-m", "immediate", "-D", data]);
        await Task.Delay(down);
        await RunAsync("pg_ctl", ["start", "-w", "-t", "60", "-D", data, "-l", Path.Combine(_dir, "server.log"),
            "-o", $"-h 127.0.0.1 -p {Port} -k {_dir} -c max_connections=200"]);
    }

    public string Log => File.Exists(Path.Combine(_dir, "server.log")) ? File.ReadAllText(Path.Combine(_dir, "server.log")) : "";

    public async Task StopAsync()
    {
        NpgsqlConnection.ClearAllPools();
        if (_started)
        {
            try { await RunAsync("pg_ctl", ["stop", "-w", "-m", "fast", "-D", Path.Combine(_dir, "data")]); }
            catch (InvalidOperationException) { await RunAsync("pg_ctl", ["stop", "-w", "-m", "immediate", "-D", Path.Combine(_dir, "data")]); }
        }
        try { Directory.Delete(_dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static string FindBin()
    {
        // Debian keeps the server programs out of PATH, in /usr/lib/postgresql/<version>/bin
        var debian = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin"))
                .Where(b => File.Exists(Path.Combine(b, "initdb")) && File.Exists(Path.Combine(b, "pg_ctl")))
                .OrderByDescending(b => int.TryParse(Path.GetFileName(Path.GetDirectoryName(b)), out var v) ? v : 0).FirstOrDefault()
            : null;
        return debian ?? "";
    }

    private async Task RunAsync(string program, string[] args)
    {
        var exe = _bin.Length > 0 ? Path.Combine(_bin, program) : program;
        var psi = _runAs is null ? new ProcessStartInfo(exe) : new ProcessStartInfo("runuser");
        if (_runAs is not null) foreach (var a in new[] { "-u", _runAs, "--", exe }) psi.ArgumentList.Add(a);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        psi.WorkingDirectory = _dir;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"{program} did not start (install Debian's postgresql; test.sh does)");
        // pg_ctl start leaves the server holding stdout open: read until the program exits, not until the pipes close
        var err = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await p.WaitForExitAsync(timeout.Token);
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{program} {string.Join(' ', args)} failed ({p.ExitCode}): {(err.IsCompleted ? await err : "")}\n{Log}");
    }

    private static bool UserExists(string name) => File.ReadLines("/etc/passwd").Any(l => l.StartsWith(name + ":", StringComparison.Ordinal));

    /// <summary>A loopback port free at the moment of asking (for this server, and for the other servers a test or benchmark starts).</summary>
    public static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
