using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Bursar.Core.Keys;
using Bursar.Storage.Sqlite;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

// The field's benchmark method (the public board's: added latency at concurrency 1, throughput, sustained load against a
// slow upstream, concurrent paced SSE streams, memory, cold start), Bursar and its peers in one run on this machine:
//   dotnet bench/Bursar.LoadBench/bin/Release/net10.0/Bursar.LoadBench.dll field [--seconds 5] [--smoke] [--only latency|streams|throughput|levers|cold] [--streams 64,512] [--no-portkey] [--bursar-args "..."] [--bursar-env "NAME=value ..."]
// The gateway is the real `bursar serve` (src/Bursar.Cli's Release build), metering, ledger and rollups on. Peers: nginx
// proxy_pass when `nginx` is on PATH (the floor), and Portkey's OSS gateway (npm @portkey-ai/gateway 1.15.2 on Node) when
// bench/portkey holds it (`npm ci --prefix bench/portkey`; --portkey DIR for another place, --no-portkey to leave it out).
// Its 1.15.2 build answers streams with HTTP 500 on Node unless each upstream fetch Response is re-wrapped: it runs with
// bench/portkey/wrap-fetch.mjs preloaded (`node --import`), which does only that. --smoke runs every cell for a moment and
// only checks that each ran without errors (./test.sh runs it).
internal static class FieldBench
{
    private const string OpenAiBody = """{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}""";
    private const string OpenAiStreamBody = """{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}""";
    private const string AnthropicBody = """{"model":"claude-haiku-4-5","max_tokens":16,"system":"You answer briefly.","messages":[{"role":"user","content":"What is the capital of France?"}]}""";
    private const string AnthropicStreamBody = """{"model":"claude-haiku-4-5","max_tokens":16,"stream":true,"system":"You answer briefly.","messages":[{"role":"user","content":"What is the capital of France?"}]}""";

    /// <summary>A way to the upstream; <paramref name="Upstream"/> is set for Portkey, which is told per request where to go (x-portkey-custom-host).</summary>
    private sealed record Path(string Name, string BaseUrl, string? Key, Process? Process, int? Upstream = null);

    private sealed record Cell(string Path, double P50, double P99, double Rps, long Errors, int Count);

    public static async Task<int> RunAsync(string[] args)
    {
        string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
        var smoke = args.Contains("--smoke");
        var seconds = smoke ? 1 : int.Parse(Arg("--seconds", "5"), CultureInfo.InvariantCulture);
        // the run's ports are --base-port and the next 19; a base whose ports are taken moves on to the next free block
        var basePort = FreeBlock(int.Parse(Arg("--base-port", "5401"), CultureInfo.InvariantCulture), 20);
        var (deltas, paceMs, delayMs) = smoke ? (4, 5, 5) : (64, 20, 20);
        // "--streams 512" runs the paced-streams table at those counts only (a quicker A/B of one count)
        var streamCounts = smoke ? new[] { 8 } : Arg("--streams", "64,128,256,512,1024").Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        var extra = Arg("--bursar-args", ""); // more configuration for every `bursar serve` of the run, e.g. "--Bursar:Ledger:FsyncInterval=00:00:01"
        // the smoke asserts only that each cell runs: each gateway's warm-up (up to 10 s before ready) is cut to a second there
        if (smoke) extra += " --Bursar:Server:WarmUpTime=00:00:01";
        var only = Arg("--only", "all"); // "latency": the added-latency table alone, "streams": the paced streams and RSS alone (quicker A/B runs), "levers": what each lever costs a call, "cold": the first 10 s after a cold start against the next 10 s, "throughput": the req/s at 64 table alone
        // environment of every `bursar serve` of the run only (not the load generator's or the upstreams'), e.g. "DOTNET_gcServer=1"
        var bursarEnv = Arg("--bursar-env", "").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(kv => kv.Split('=', 2)).ToDictionary(kv => kv[0], kv => kv.Length > 1 ? kv[1] : "");

        var self = typeof(FieldBench).Assembly.Location;
        // --bursar-dll: another build of the gateway, e.g. a ReadyToRun publish (dotnet publish src/Bursar.Cli -c Release -r linux-x64 -p:PublishReadyToRun=true)
        var bursarDll = System.IO.Path.GetFullPath(Arg("--bursar-dll", System.IO.Path.Combine(System.IO.Path.GetDirectoryName(self)!, "../../../../../src/Bursar.Cli/bin/Release/net10.0/bursar.dll")));
        if (!File.Exists(bursarDll)) throw new InvalidOperationException($"Build the gateway first: dotnet build -c Release src/Bursar.Cli (looked for {bursarDll}).");
        var (upFast, upSlow) = (basePort, basePort + 1);
        var data = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "bursar-field-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(data);
        var secret = VirtualKey.NewSecret();
        foreach (var dir in new[] { data, data + "-slow", data + "-cold" })
        {
            // each gateway its own ledger, the same virtual key in each
            Directory.CreateDirectory(dir);
            var store = new SqliteStore(System.IO.Path.Combine(dir, "bursar.db"));
            await store.AddAsync(new VirtualKey { Id = "key_field", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), Team = "bench", CreatedAt = TimeProvider.System.GetUtcNow() }, default);
        }
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();

        var processes = new List<Process>();
        Process Start(string file, string arguments, string? workDir = null, IReadOnlyDictionary<string, string>? env = null)
        {
            var psi = new ProcessStartInfo(file, arguments) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workDir ?? Environment.CurrentDirectory };
            foreach (var (name, value) in env ?? new Dictionary<string, string>()) psi.Environment[name] = value;
            var p = Process.Start(psi)!;
            Output.Follow(p);
            processes.Add(p);
            return p;
        }
        Process StartBursar(int port, int upstream, string dir, string? settings = null) => Start("dotnet",
            $"\"{bursarDll}\" serve --port {port} --data-dir \"{dir}\" "
            + $"--Bursar:Providers:Deployments:openai:BaseUrl=http://127.0.0.1:{upstream}/v1 --Bursar:Providers:Deployments:openai:ApiKey=sk-field "
            + $"--Bursar:Providers:Deployments:anthropic:BaseUrl=http://127.0.0.1:{upstream} --Bursar:Providers:Deployments:anthropic:ApiKey=sk-ant-field "
            + "--Logging:LogLevel:Default=Warning " + extra + " " + settings, env: bursarEnv);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 4096, UseProxy = false, PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = TimeSpan.FromSeconds(60) };
        try
        {
            var upstreamFast = Start("dotnet", $"\"{self}\" upstream --port {upFast}");
            var upstreamSlow = Start("dotnet", $"\"{self}\" upstream --port {upSlow} --delay-ms {delayMs} --deltas {deltas} --pace-ms {paceMs}");
            await WaitReady(http, $"http://127.0.0.1:{upFast}/ready", upstreamFast);
            await WaitReady(http, $"http://127.0.0.1:{upSlow}/ready", upstreamSlow);
            if (only == "levers") return await LeverCosts(http, StartBursar, data, secret, basePort + 10, upFast, seconds, smoke);

            // cold start: a fresh gateway, timed from the moment it says ready, on its own
            var coldPort = basePort + 9;
            var coldStarted = Stopwatch.GetTimestamp();
            var cold = StartBursar(coldPort, upFast, data + "-cold");
            await WaitReady(http, $"http://127.0.0.1:{coldPort}/health/ready", cold);
            var readyMs = Stopwatch.GetElapsedTime(coldStarted).TotalMilliseconds;
            var coldCell = await Load(http, "bursar, first 10 s", $"http://127.0.0.1:{coldPort}", secret, false, "openai", 1, smoke ? 1 : 10, warmSeconds: 0);
            if (only == "cold")
            {
                // and the next 10 s of the same process, for the ratio the issue asks (first 10 s vs steady)
                var steadyCell = await Load(http, "bursar, next 10 s", $"http://127.0.0.1:{coldPort}", secret, false, "openai", 1, smoke ? 1 : 10, warmSeconds: 0);
                Stop(cold);
                Console.WriteLine($"Cold start of {bursarDll}: ready in {readyMs:F0} ms; first {(smoke ? 1 : 10)} s p50 / p99 {coldCell.P50:F3} / {coldCell.P99:F3} ms ({coldCell.Count} calls); "
                    + $"next {(smoke ? 1 : 10)} s {steadyCell.P50:F3} / {steadyCell.P99:F3} ms ({steadyCell.Count} calls); first / next p99 {coldCell.P99 / steadyCell.P99:F2}x; errors {coldCell.Errors + steadyCell.Errors}");
                return coldCell.Errors + steadyCell.Errors == 0 ? 0 : 1;
            }
            Stop(cold);

            var bursarFast = new Path("bursar", $"http://127.0.0.1:{basePort + 2}", secret, StartBursar(basePort + 2, upFast, data));
            var bursarSlow = new Path("bursar", $"http://127.0.0.1:{basePort + 3}", secret, StartBursar(basePort + 3, upSlow, data + "-slow"));
            var fast = new List<Path> { new("direct", $"http://127.0.0.1:{upFast}", null, null), bursarFast };
            var slow = new List<Path> { new("direct", $"http://127.0.0.1:{upSlow}", null, null), bursarSlow };
            if (Which("nginx") is { } nginx)
            {
                var conf = NginxConfig(data, basePort + 4, upFast, basePort + 5, upSlow);
                var nginxProcess = Start(nginx, $"-p \"{data}\" -c \"{conf}\" -g \"daemon off;\"");
                fast.Add(new Path("nginx proxy_pass", $"http://127.0.0.1:{basePort + 4}", null, nginxProcess));
                slow.Add(new Path("nginx proxy_pass", $"http://127.0.0.1:{basePort + 5}", null, nginxProcess));
            }
            var portkeyDir = args.Contains("--no-portkey") ? null : System.IO.Path.GetFullPath(Arg("--portkey", System.IO.Path.Combine(System.IO.Path.GetDirectoryName(self)!, "../../../../portkey")));
            var portkeyServer = portkeyDir is null ? null : System.IO.Path.Combine(portkeyDir, "node_modules/@portkey-ai/gateway/build/start-server.js");
            if (portkeyServer is not null && File.Exists(portkeyServer) && Which("node") is { } node)
            {
                var portkey = Start(node, $"--import \"{System.IO.Path.Combine(portkeyDir!, "wrap-fetch.mjs")}\" \"{portkeyServer}\" --port={basePort + 6} --headless",
                    portkeyDir, new Dictionary<string, string> { ["NODE_ENV"] = "production" });
                fast.Add(new Path("portkey", $"http://127.0.0.1:{basePort + 6}", "sk-field", portkey, upFast));
                slow.Add(new Path("portkey", $"http://127.0.0.1:{basePort + 6}", "sk-field", portkey, upSlow));
            }
            foreach (var p in fast.Concat(slow).ToList())
            {
                if (p.Name is "bursar" or "direct")
                {
                    await WaitReady(http, p.BaseUrl + (p.Name == "bursar" ? "/health/ready" : "/ready"), p.Process);
                    continue;
                }
                // a peer that cannot start on this machine is left out of the run, loudly, with what it printed; Bursar's cells still run
                if (!fast.Contains(p) && !slow.Contains(p)) continue;
                try { await WaitReady(http, p.BaseUrl + "/", p.Process); }
                catch (InvalidOperationException e)
                {
                    Console.WriteLine($"peer {p.Name} left out of this run: {e.Message}");
                    fast.RemoveAll(x => x.Name == p.Name);
                    slow.RemoveAll(x => x.Name == p.Name);
                }
            }
            var bursarPids = new[] { bursarFast.Process!, bursarSlow.Process! };

            // every path warmed up first (JIT tiers, connection pools)
            foreach (var p in fast.Concat(slow))
                foreach (var (dialect, stream) in new[] { ("openai", false), ("openai", true), ("anthropic", false), ("anthropic", true) })
                    await Load(http, p.Name, p.BaseUrl, p.Key, stream, dialect, 4, smoke ? 1 : 2, warmSeconds: 0, upstream: p.Upstream);

            var errors = 0L;
            Console.WriteLine($"Bursar field benchmark, {TimeProvider.System.GetUtcNow():yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores shared by load generator, upstreams and gateways (not pinned); {seconds} s per cell after a 1 s warm-up{(smoke ? " (smoke: short cells, errors only)" : "")}");
            Console.WriteLine($"Bursar: `bursar serve` ({bursarDll}), metering, ledger (SQLite, journal) and rollups on; peers: {string.Join(", ", fast.Skip(2).Select(p => p.Name).DefaultIfEmpty("none found"))}");
            if (only is "all" or "latency")
            {
                Console.WriteLine();
                Console.WriteLine("Added latency at concurrency 1 (path minus direct, same run), instant upstream:");
                Console.WriteLine();
                Console.WriteLine("| path | dialect | mode | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |");
                Console.WriteLine("|---|---|---|---:|---:|---:|---:|---:|");
                foreach (var (dialect, stream) in new[] { ("openai", false), ("openai", true), ("anthropic", false), ("anthropic", true) })
                {
                    Cell? direct = null;
                    foreach (var p in fast)
                    {
                        var c = await Load(http, p.Name, p.BaseUrl, p.Key, stream, dialect, 1, seconds, upstream: p.Upstream);
                        direct ??= c;
                        errors += c.Errors;
                        Console.WriteLine(Row($"| {p.Name} | {dialect} | {(stream ? "SSE" : "JSON")} | {c.P50:F3} | {c.P99:F3} | {(p.Name == "direct" ? "" : (c.P50 - direct.P50).ToString("F3", CultureInfo.InvariantCulture))} | {(p.Name == "direct" ? "" : (c.P99 - direct.P99).ToString("F3", CultureInfo.InvariantCulture))} | {c.Errors} |"));
                    }
                }
                if (only == "latency") return errors == 0 ? 0 : 1;
            }
            if (only is "all" or "throughput")
            {
                Console.WriteLine();
                Console.WriteLine("Throughput at concurrency 64, instant upstream, OpenAI JSON:");
                Console.WriteLine();
                Console.WriteLine("| path | req/s | p50 ms | p99 ms | share of the floor | proxy CPU us per request | errors |");
                Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
                var throughput = new List<(Cell Cell, double? CpuUs)>();
                foreach (var p in fast)
                {
                    // the proxy's own CPU per request (process and children, user + system) over the measured cell and its warm-up
                    var cpuBefore = CpuSeconds(p.Process);
                    var c = await Load(http, p.Name, p.BaseUrl, p.Key, false, "openai", 64, seconds, upstream: p.Upstream);
                    var cpu = cpuBefore is { } b && CpuSeconds(p.Process) is { } a ? (a - b) * 1e6 / (c.Rps * (seconds + 1)) : (double?)null;
                    throughput.Add((c, cpu));
                    errors += c.Errors;
                }
                var floor = throughput.FirstOrDefault(c => c.Cell.Path == "nginx proxy_pass").Cell ?? throughput[0].Cell;
                foreach (var (c, cpu) in throughput)
                    Console.WriteLine(Row($"| {c.Path} | {c.Rps:F0} | {c.P50:F3} | {c.P99:F3} | {c.Rps / floor.Rps:P0} | {(cpu is { } us ? us.ToString("F0", CultureInfo.InvariantCulture) : "")} | {c.Errors} |"));
                if (throughput.FirstOrDefault(c => c.Cell.Path == "portkey").Cell is { Rps: > 0 } pk && throughput.FirstOrDefault(c => c.Cell.Path == "bursar").Cell is { } bu)
                {
                    Console.WriteLine();
                    Console.WriteLine(Row($"Bursar / Portkey throughput: {bu.Rps / pk.Rps:F1}x"));
                }
                if (only == "throughput") return errors == 0 ? 0 : 1;

                Console.WriteLine();
                var bound = delayMs * 1.5;
                Console.WriteLine($"Sustained load against a {delayMs} ms upstream, OpenAI JSON (p99 bound {bound:F0} ms):");
                Console.WriteLine();
                Console.WriteLine("| path | concurrency | req/s | p50 ms | p99 ms | within bound | errors |");
                Console.WriteLine("|---|---:|---:|---:|---:|---|---:|");
                foreach (var p in slow)
                    foreach (var n in smoke ? new[] { 4 } : [64, 256, 512])
                    {
                        var c = await Load(http, p.Name, p.BaseUrl, p.Key, false, "openai", n, seconds, upstream: p.Upstream);
                        errors += c.Errors;
                        Console.WriteLine(Row($"| {p.Name} | {n} | {c.Rps:F0} | {c.P50:F3} | {c.P99:F3} | {(c.P99 <= bound && c.Errors == 0 ? "yes" : "no")} | {c.Errors} |"));
                    }
            }

            Console.WriteLine();
            Console.WriteLine($"Concurrent SSE streams, {deltas} deltas {paceMs} ms apart (OpenAI): held = every stream complete, no gap between deltas over {2 * paceMs} ms:");
            Console.WriteLine();
            Console.WriteLine("| path | streams | completed | stalls | dropped | added first-token p99 ms | held | gateway RSS MB |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|---|---:|");
            foreach (var n in streamCounts)
            {
                var direct = await Streams(http, slow[0], n, deltas, paceMs);
                foreach (var p in slow)
                {
                    var s = p.Name == "direct" ? direct : await Streams(http, p, n, deltas, paceMs);
                    var held = s.Dropped == 0 && s.Stalls == 0;
                    if (smoke) errors += s.Dropped; // past the smoke's few streams a drop is a finding (the largest count held), not a failure
                    var rss = p.Process is not null ? (RssMb(p.Process)?.ToString("F0", CultureInfo.InvariantCulture) ?? "") : "";
                    Console.WriteLine(Row($"| {p.Name} | {n} | {s.Completed} | {s.Stalls} | {s.Dropped} | {(p.Name == "direct" ? "" : (s.FirstTokenP99 - direct.FirstTokenP99).ToString("F3", CultureInfo.InvariantCulture))} | {(held ? "yes" : "no")} | {rss} |"));
                }
            }

            if (only is "all")
            {
                Console.WriteLine();
                Console.WriteLine("Cold start (a fresh `bursar serve`, concurrency 1, OpenAI JSON, instant upstream):");
                Console.WriteLine();
                Console.WriteLine("| measure | value |");
                Console.WriteLine("|---|---:|");
                Console.WriteLine(Row($"| process start to /health/ready | {readyMs:F0} ms |"));
                Console.WriteLine(Row($"| first {(smoke ? 1 : 10)} s after ready: p50 / p99 | {coldCell.P50:F3} / {coldCell.P99:F3} ms ({coldCell.Count} calls, {coldCell.Errors} errors) |"));
            errors += coldCell.Errors;
            }
            Console.WriteLine();
            Console.WriteLine("| gateway memory | RSS MB |");
            Console.WriteLine("|---|---:|");
            await Task.Delay(smoke ? 200 : 3000);
            foreach (var p in bursarPids) Console.WriteLine(Row($"| bursar serve (pid {p.Id}), after its load | {RssMb(p):F0} |"));
            if (fast.FirstOrDefault(p => p.Name == "portkey")?.Process is { } pkp) Console.WriteLine(Row($"| portkey (node, pid {pkp.Id}), after its load | {RssMb(pkp):F0} |"));
            Console.WriteLine();
            Console.WriteLine(errors == 0 ? "Every cell ran without errors." : $"{errors} errors (see the tables).");
            return errors == 0 ? 0 : 1;
        }
        finally
        {
            foreach (var p in processes) Stop(p);
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var dir in new[] { data, data + "-slow", data + "-cold" }.Concat(Enumerable.Range(0, 8).Select(i => data + "-lever-" + i.ToString(CultureInfo.InvariantCulture))))
                try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static string Row(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static string NginxConfig(string dir, int fastPort, int fastUpstream, int slowPort, int slowUpstream)
    {
        Directory.CreateDirectory(System.IO.Path.Combine(dir, "logs"));
        var conf = System.IO.Path.Combine(dir, "nginx.conf");
        string Server(int port, int upstream) => $$"""
            upstream up{{port}} { server 127.0.0.1:{{upstream}}; keepalive 512; }
            server {
              listen 127.0.0.1:{{port}} reuseport backlog=4096;
              access_log off;
              location / { proxy_pass http://up{{port}}; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 120s; }
            }
            """;
        File.WriteAllText(conf, $$"""
            worker_processes 1;
            error_log {{dir}}/logs/error.log warn;
            pid {{dir}}/nginx.pid;
            events { worker_connections 8192; }
            http {
              client_body_temp_path {{dir}}/tmp; proxy_temp_path {{dir}}/tmp;
              {{Server(fastPort, fastUpstream)}}
              {{Server(slowPort, slowUpstream)}}
            }
            """);
        return conf;
    }

    private static string? Which(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => System.IO.Path.Combine(d, program)).FirstOrDefault(File.Exists)
        ?? new[] { "/usr/sbin/" + program, "/sbin/" + program }.FirstOrDefault(File.Exists);

    /// <summary>CPU time (user + system) of a process and its children (nginx's worker), in seconds, from /proc; null off Linux.</summary>
    private static double? CpuSeconds(Process? p)
    {
        if (p is null) return null;
        try
        {
            double Of(int pid)
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                // utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3
                var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
                var children = File.Exists($"/proc/{pid}/task/{pid}/children") ? File.ReadAllText($"/proc/{pid}/task/{pid}/children") : "";
                return ticks / 100.0 + children.Split(' ', StringSplitOptions.RemoveEmptyEntries).Sum(c => Of(int.Parse(c, CultureInfo.InvariantCulture)));
            }
            return Of(p.Id);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    private static double? RssMb(Process p)
    {
        try
        {
            var line = File.ReadLines($"/proc/{p.Id}/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
            return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// What each lever costs a call: one `bursar serve` per configuration (every lever off, the defaults, then the defaults
    /// with one more lever on), each started alone, warmed up and measured against the instant upstream: added p50/p99 at
    /// concurrency 1 (OpenAI and Anthropic JSON) and req/s at concurrency 64 (OpenAI JSON). Every OpenAI body asks for
    /// temperature 0 with a prompt of its own, so the exact cache looks up and stores on every call and never answers.
    /// </summary>
    private static async Task<int> LeverCosts(HttpClient http, Func<int, int, string, string?, Process> startBursar, string data, string secret, int port, int upstream, int seconds, bool smoke)
    {
        const string off = "--Bursar:ResponseCache:Enabled=false --Bursar:PromptCache:PlaceBreakpoints=false --Bursar:PromptCache:SetOpenAIPromptCacheKey=false";
        var configs = new (string Name, string Settings, bool Budgets)[]
        {
            ("every lever off", off, false),
            ("defaults (exact cache, prompt caching)", "", false),
            ("exact cache alone", "--Bursar:PromptCache:PlaceBreakpoints=false --Bursar:PromptCache:SetOpenAIPromptCacheKey=false", false),
            ("prompt caching alone", "--Bursar:ResponseCache:Enabled=false", false),
            ("defaults + budgets (global and team)", "", true),
            ("defaults + a route (gpt-4o-mini -> gpt-4.1-mini)", "--Bursar:Routing:Routes:0:Name=bench --Bursar:Routing:Routes:0:RequestedModel=gpt-4o-mini --Bursar:Routing:Routes:0:Model=gpt-4.1-mini", false),
        };
        var unique = 0L;
        HttpRequestMessage Unique(string baseUrl, string? key)
        {
            var n = Interlocked.Increment(ref unique);
            var body = "{\"model\":\"gpt-4o-mini\",\"temperature\":0,\"messages\":[{\"role\":\"system\",\"content\":\"You answer briefly.\"},{\"role\":\"user\",\"content\":\"What is the capital of France? ("
                + n.ToString(CultureInfo.InvariantCulture) + ")\"}],\"max_tokens\":16}";
            var req = new HttpRequestMessage(HttpMethod.Post, baseUrl + "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            if (key is not null) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            return req;
        }
        async Task<Cell> Measure(string name, string baseUrl, string? key, string dialect, int concurrency)
        {
            var (latencies, errors) = dialect == "openai"
                ? await LoadLoop.RunAsync(http, () => Unique(baseUrl, key), concurrency, seconds, 1)
                : await LoadLoop.RunAsync(http, () => Request(baseUrl, key, false, "anthropic"), concurrency, seconds, 1);
            if (latencies.Length == 0) return new Cell(name, double.NaN, double.NaN, 0, errors, 0);
            return new Cell(name, LoadLoop.Percentile(latencies, 0.50), LoadLoop.Percentile(latencies, 0.99), latencies.Length / (double)seconds, errors, latencies.Length);
        }
        var direct = $"http://127.0.0.1:{upstream}";
        var directOpenAi = await Measure("direct", direct, null, "openai", 1);
        var directAnthropic = await Measure("direct", direct, null, "anthropic", 1);
        var directRps = await Measure("direct", direct, null, "openai", smoke ? 4 : 64);
        Console.WriteLine($"What each lever costs a call, {TimeProvider.System.GetUtcNow():yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores; {seconds} s per cell; one `bursar serve` per configuration, started alone:");
        Console.WriteLine();
        Console.WriteLine("| configuration | added p50 / p99 ms, OpenAI JSON (cacheable, every call a miss) | added p50 / p99 ms, Anthropic JSON | req/s at 64, OpenAI JSON | errors |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        Console.WriteLine(Row($"| direct (the upstream; absolute) | {directOpenAi.P50:F3} / {directOpenAi.P99:F3} | {directAnthropic.P50:F3} / {directAnthropic.P99:F3} | {directRps.Rps:F0} | {directOpenAi.Errors + directAnthropic.Errors + directRps.Errors} |"));
        long errors = 0;
        for (var i = 0; i < configs.Length; i++)
        {
            var (name, settings, budgets) = configs[i];
            var dir = data + "-lever-" + i.ToString(CultureInfo.InvariantCulture);
            Directory.CreateDirectory(dir);
            var store = new SqliteStore(System.IO.Path.Combine(dir, "bursar.db"));
            await store.AddAsync(new VirtualKey { Id = "key_field", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), Team = "bench", CreatedAt = TimeProvider.System.GetUtcNow() }, default);
            if (budgets)
            {
                await store.UpsertBudgetAsync(new Bursar.Core.Budgets.BudgetDefinition { Id = "bench-global", Scope = Bursar.Core.Budgets.BudgetScope.Global, Period = Bursar.Core.Budgets.BudgetPeriod.Month, LimitUsd = 1_000_000m }, default);
                await store.UpsertBudgetAsync(new Bursar.Core.Budgets.BudgetDefinition { Id = "bench-team", Scope = Bursar.Core.Budgets.BudgetScope.Team, Value = "bench", Period = Bursar.Core.Budgets.BudgetPeriod.Day, LimitUsd = 1_000_000m }, default);
            }
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            var p = startBursar(port + i, upstream, dir, settings);
            try
            {
                var url = $"http://127.0.0.1:{port + i}";
                await WaitReady(http, url + "/health/ready", p);
                await Measure(name, url, secret, "openai", 4); // warm-up: JIT tiers, connection pools
                await Measure(name, url, secret, "anthropic", 4);
                var o = await Measure(name, url, secret, "openai", 1);
                var a = await Measure(name, url, secret, "anthropic", 1);
                var r = await Measure(name, url, secret, "openai", smoke ? 4 : 64);
                errors += o.Errors + a.Errors + r.Errors;
                Console.WriteLine(Row($"| {name} | {o.P50 - directOpenAi.P50:F3} / {o.P99 - directOpenAi.P99:F3} | {a.P50 - directAnthropic.P50:F3} / {a.P99 - directAnthropic.P99:F3} | {r.Rps:F0} | {o.Errors + a.Errors + r.Errors} |"));
            }
            finally
            {
                Stop(p);
            }
        }
        Console.WriteLine();
        Console.WriteLine(errors == 0 ? "Every cell ran without errors." : $"{errors} errors.");
        return errors == 0 ? 0 : 1;
    }

    private static void Stop(Process p)
    {
        try { p.Kill(entireProcessTree: true); p.WaitForExit(5000); } catch (InvalidOperationException) { }
    }

    private static HttpRequestMessage Request(string baseUrl, string? key, bool stream, string dialect, int? upstream = null)
    {
        var anthropic = dialect == "anthropic";
        var req = new HttpRequestMessage(HttpMethod.Post, baseUrl + (anthropic ? "/v1/messages" : "/v1/chat/completions"))
        {
            Content = new StringContent(anthropic ? stream ? AnthropicStreamBody : AnthropicBody : stream ? OpenAiStreamBody : OpenAiBody, Encoding.UTF8, "application/json"),
        };
        if (key is not null)
        {
            if (anthropic) req.Headers.Add("x-api-key", key);
            else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }
        if (anthropic) req.Headers.Add("anthropic-version", "2023-06-01");
        if (upstream is { } port)
        {
            // Portkey: which provider's adapter, and where that provider is (the mock upstream instead of the provider's API)
            req.Headers.Add("x-portkey-provider", anthropic ? "anthropic" : "openai");
            req.Headers.Add("x-portkey-custom-host", $"http://127.0.0.1:{port}/v1");
        }
        return req;
    }

    private static async Task<Cell> Load(HttpClient http, string name, string baseUrl, string? key, bool stream, string dialect, int concurrency, int seconds, int warmSeconds = 1, int? upstream = null)
    {
        var (latencies, errors) = await LoadLoop.RunAsync(http, () => Request(baseUrl, key, stream, dialect, upstream), concurrency, seconds, warmSeconds);
        if (latencies.Length == 0) return new Cell(name, double.NaN, double.NaN, 0, errors, 0);
        return new Cell(name, LoadLoop.Percentile(latencies, 0.50), LoadLoop.Percentile(latencies, 0.99), latencies.Length / (double)seconds, errors, latencies.Length);
    }

    private sealed record StreamResult(int Completed, int Stalls, int Dropped, double FirstTokenP99);

    /// <summary><paramref name="count"/> streams at once, each read line by line: a stall is a gap between two deltas over twice the pacing; a stream is dropped when it fails or ends short.</summary>
    private static async Task<StreamResult> Streams(HttpClient http, Path p, int count, int deltas, int paceMs)
    {
        int completed = 0, stalls = 0, dropped = 0;
        var firstTokens = new double[count];
        var start = new TaskCompletionSource();
        var tasks = Enumerable.Range(0, count).Select(i => Task.Run(async () =>
        {
            await start.Task;
            var t0 = Stopwatch.GetTimestamp();
            try
            {
                using var req = Request(p.BaseUrl, p.Key, stream: true, "openai", p.Upstream);
                using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
                if (resp.StatusCode != HttpStatusCode.OK) { Interlocked.Increment(ref dropped); return; }
                using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
                var seen = 0;
                var last = 0L;
                var stalled = false;
                while (await reader.ReadLineAsync() is { } line)
                {
                    if (!line.StartsWith("data: {", StringComparison.Ordinal) || !line.Contains("\"content\":\"", StringComparison.Ordinal)) continue;
                    var now = Stopwatch.GetTimestamp();
                    if (seen == 0) firstTokens[i] = (now - t0) * 1000.0 / Stopwatch.Frequency;
                    else if ((now - last) * 1000.0 / Stopwatch.Frequency > 2 * paceMs) stalled = true;
                    last = now;
                    seen++;
                }
                if (seen < deltas) Interlocked.Increment(ref dropped);
                else Interlocked.Increment(ref completed);
                if (stalled) Interlocked.Increment(ref stalls);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
            {
                Interlocked.Increment(ref dropped);
            }
        })).ToArray();
        start.SetResult();
        await Task.WhenAll(tasks);
        var ft = firstTokens.Where(x => x > 0).Order().ToArray();
        return new StreamResult(completed, stalls, dropped, ft.Length == 0 ? double.NaN : LoadLoop.Percentile(ft, 0.99));
    }

    /// <summary>Waits up to 60 s for <paramref name="url"/> to answer below 500; fails at once when <paramref name="process"/> has exited, with what it printed.</summary>
    private static async Task WaitReady(HttpClient http, string url, Process? process)
    {
        var started = Stopwatch.GetTimestamp();
        var last = "no answer";
        while (Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(60))
        {
            if (process is { HasExited: true })
                throw new InvalidOperationException($"not ready: {url}: {process.StartInfo.FileName} exited with code {process.ExitCode}; it printed:{Environment.NewLine}{Output.Tail(process)}");
            try
            {
                using var r = await http.GetAsync(url);
                if ((int)r.StatusCode < 500) return;
                last = "HTTP " + (int)r.StatusCode;
            }
            catch (HttpRequestException e) { last = e.Message; }
            await Task.Delay(50);
        }
        throw new InvalidOperationException($"not ready after 60 s: {url} ({last}){(process is null ? "" : "; it printed:" + Environment.NewLine + Output.Tail(process))}");
    }

    /// <summary>The first port of <paramref name="span"/> consecutive ports on 127.0.0.1 that are free now, from <paramref name="start"/> on.</summary>
    private static int FreeBlock(int start, int span)
    {
        for (var block = start; block + span < 65536; block += span)
        {
            var listeners = new List<System.Net.Sockets.TcpListener>();
            try
            {
                for (var port = block; port < block + span; port++)
                {
                    var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, port);
                    l.Start();
                    listeners.Add(l);
                }
                return block;
            }
            catch (System.Net.Sockets.SocketException) { }
            finally
            {
                foreach (var l in listeners) l.Stop();
            }
        }
        throw new InvalidOperationException($"no {span} free consecutive ports from {start}");
    }

    /// <summary>The last lines each started process printed (stdout and stderr), for the message when one does not come up.</summary>
    private static class Output
    {
        private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Process, System.Collections.Concurrent.ConcurrentQueue<string>> Lines = new();

        public static void Follow(Process p)
        {
            var lines = Lines.GetOrCreateValue(p);
            void Add(string? line)
            {
                if (line is null) return;
                lines.Enqueue(line);
                while (lines.Count > 40) lines.TryDequeue(out _);
            }
            p.OutputDataReceived += (_, e) => Add(e.Data);
            p.ErrorDataReceived += (_, e) => Add(e.Data);
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
        }

        public static string Tail(Process p) => Lines.TryGetValue(p, out var lines) && !lines.IsEmpty ? string.Join(Environment.NewLine, lines) : "(nothing)";
    }
}

/// <summary>Closed-loop load: <c>concurrency</c> workers each sending the next request when the last one's body has been read.</summary>
internal static class LoadLoop
{
    /// <summary>The latencies (ms, sorted) of the requests started after the warm-up, and the count of failed ones.</summary>
    public static async Task<(double[] Latencies, long Errors)> RunAsync(HttpClient http, Func<HttpRequestMessage> request, int concurrency, int seconds, int warmSeconds = 1)
    {
        var latencies = new List<double>[concurrency];
        long errors = 0;
        var warmUntil = Stopwatch.GetTimestamp() + warmSeconds * Stopwatch.Frequency;
        var stopAt = warmUntil + seconds * Stopwatch.Frequency;
        var workers = Enumerable.Range(0, concurrency).Select(w => Task.Run(async () =>
        {
            var mine = latencies[w] = new List<double>(50_000);
            var buf = new byte[16 * 1024];
            while (true)
            {
                var t0 = Stopwatch.GetTimestamp();
                if (t0 >= stopAt) break;
                using var req = request();
                try
                {
                    using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
                    await using var s = await resp.Content.ReadAsStreamAsync();
                    while (await s.ReadAsync(buf) > 0) { }
                    if (resp.StatusCode != HttpStatusCode.OK) Interlocked.Increment(ref errors);
                }
                catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
                {
                    Interlocked.Increment(ref errors);
                }
                var t1 = Stopwatch.GetTimestamp();
                if (t0 >= warmUntil) mine.Add((t1 - t0) * 1000.0 / Stopwatch.Frequency);
            }
        })).ToArray();
        await Task.WhenAll(workers);
        return (latencies.SelectMany(l => l).Order().ToArray(), errors);
    }

    public static double Percentile(double[] sorted, double q) => sorted[Math.Min(sorted.Length - 1, (int)(sorted.Length * q))];
}
