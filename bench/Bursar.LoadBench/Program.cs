using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Gateway.Hosting;
using Bursar.Storage.Sqlite;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

// Loopback load benchmark: the same requests sent straight to a static upstream and through the Bursar gateway
// (authentication, metering and the SQLite ledger on), p50 / p99 and throughput at several concurrencies, for Chat
// Completions and the Responses API (JSON and streamed) in the same run.
// Three processes on one machine: this load generator, the upstream, the gateway.
//   dotnet run -c Release --project bench/Bursar.LoadBench -- run [--seconds 5] [--concurrency 1,16,64] [--base-port 5301]
// The shared stores (PostgreSQL + Redis, started here in temporary directories) against the embedded defaults, in
// alternating rounds, and the Redis round trips of a budget reservation, a settle, a rate-limit check and a run start:
//   dotnet run -c Release --project bench/Bursar.LoadBench -- shared [--rounds 5] [--seconds 3] [--base-port 5361]
// Two builds in one run (before and after a change): the other build's Bursar.LoadBench.dll serves as the second gateway,
// rounds alternate between the two, the added p50 of each and their ratio is printed:
//   dotnet run -c Release --project bench/Bursar.LoadBench -- compare --other /path/to/other/Bursar.LoadBench.dll [--rounds 6] [--seconds 3]
var mode = args.FirstOrDefault() ?? "run";
string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;

switch (mode)
{
    case "upstream":
        await Upstream.RunAsync(int.Parse(Arg("--port", "5301"), CultureInfo.InvariantCulture), int.Parse(Arg("--delay-ms", "0"), CultureInfo.InvariantCulture),
            int.Parse(Arg("--deltas", "5"), CultureInfo.InvariantCulture), int.Parse(Arg("--pace-ms", "0"), CultureInfo.InvariantCulture));
        return 0;
    case "field":
        return await FieldBench.RunAsync(args);
    case "shared":
        return await SharedBench.RunAsync(int.Parse(Arg("--rounds", "5"), CultureInfo.InvariantCulture), int.Parse(Arg("--seconds", "3"), CultureInfo.InvariantCulture),
            int.Parse(Arg("--base-port", "5361"), CultureInfo.InvariantCulture));
    case "gateway":
        var app = GatewayHost.Build(
        [
            $"--urls=http://127.0.0.1:{Arg("--port", "5302")}",
            $"--Bursar:DataDirectory={Arg("--data", "bench-data")}",
            "--Bursar:Providers:Deployments:bench:Dialect=openai",
            $"--Bursar:Providers:Deployments:bench:BaseUrl={Arg("--upstream", "http://127.0.0.1:5301")}/v1",
            "--Bursar:Providers:Deployments:bench:ApiKey=sk-bench-upstream",
            "--Bursar:Providers:Deployments:bench:Models:0=gpt-4o-mini",
            "--Logging:LogLevel:Default=Warning",
            // the shared mode's stores: --Bursar:Store=postgres, --Bursar:Redis:Configuration=...
            .. args.Where(a => a.StartsWith("--Bursar:", StringComparison.Ordinal)),
        ], b => b.Logging.SetMinimumLevel(LogLevel.Warning));
        await app.RunAsync();
        return 0;
    case "compare":
        return await Runner.CompareAsync(Arg("--other", ""), int.Parse(Arg("--rounds", "6"), CultureInfo.InvariantCulture),
            int.Parse(Arg("--seconds", "3"), CultureInfo.InvariantCulture), int.Parse(Arg("--base-port", "5341"), CultureInfo.InvariantCulture));
    default:
        return await Runner.RunAsync(int.Parse(Arg("--seconds", "5"), CultureInfo.InvariantCulture),
            Arg("--concurrency", "1,16,64").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(),
            int.Parse(Arg("--base-port", "5301"), CultureInfo.InvariantCulture));
}

internal static class Upstream
{
    private static readonly byte[] Json = Encoding.UTF8.GetBytes("""{"id":"chatcmpl-static","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":2,"total_tokens":33,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_static"}""");

    private static readonly byte[] Sse = BuildSse();

    private static readonly byte[] ResponsesJson = Encoding.UTF8.GetBytes("""{"id":"resp_static","object":"response","created_at":1741569952,"status":"completed","error":null,"incomplete_details":null,"instructions":"You answer briefly.","max_output_tokens":16,"model":"gpt-4o-mini-2024-07-18","output":[{"id":"msg_static","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Paris.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":31,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":33},"metadata":{}}""");

    private static readonly byte[] ResponsesSse = BuildResponsesSse();

    /// <summary>The typed event sequence of a text answer (PROVIDER_API.md section 8), five deltas, no <c>[DONE]</c>.</summary>
    private static byte[] BuildResponsesSse()
    {
        var sb = new StringBuilder();
        var seq = 0;
        void Event(string type, string fields) => sb.Append("event: ").Append(type).Append("\ndata: {\"type\":\"").Append(type).Append("\",\"sequence_number\":").Append(seq++).Append(',').Append(fields).Append("}\n\n");
        const string pending = "\"response\":{\"id\":\"resp_static\",\"object\":\"response\",\"created_at\":1741569952,\"status\":\"in_progress\",\"model\":\"gpt-4o-mini-2024-07-18\",\"output\":[],\"usage\":null}";
        Event("response.created", pending);
        Event("response.in_progress", pending);
        Event("response.output_item.added", "\"output_index\":0,\"item\":{\"id\":\"msg_static\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}");
        Event("response.content_part.added", "\"item_id\":\"msg_static\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}");
        foreach (var w in new[] { "The", " capital", " is", " Paris", "." })
            Event("response.output_text.delta", "\"item_id\":\"msg_static\",\"output_index\":0,\"content_index\":0,\"delta\":\"" + w + "\",\"logprobs\":[]");
        Event("response.output_text.done", "\"item_id\":\"msg_static\",\"output_index\":0,\"content_index\":0,\"text\":\"The capital is Paris.\",\"logprobs\":[]");
        Event("response.content_part.done", "\"item_id\":\"msg_static\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"The capital is Paris.\",\"annotations\":[]}");
        const string item = "{\"id\":\"msg_static\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"The capital is Paris.\",\"annotations\":[]}]}";
        Event("response.output_item.done", "\"output_index\":0,\"item\":" + item);
        Event("response.completed", "\"response\":{\"id\":\"resp_static\",\"object\":\"response\",\"created_at\":1741569952,\"status\":\"completed\",\"model\":\"gpt-4o-mini-2024-07-18\",\"output\":[" + item + "],\"usage\":{\"input_tokens\":31,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":36}}");
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    private static byte[] BuildSse()
    {
        var sb = new StringBuilder();
        const string head = "{\"id\":\"chatcmpl-static\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_static\",";
        sb.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n");
        foreach (var w in new[] { "The", " capital", " is", " Paris", "." })
            sb.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"").Append(w).Append("\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n");
        sb.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n");
        sb.Append("data: ").Append(head).Append("\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":5,\"total_tokens\":36,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n");
        sb.Append("data: [DONE]\n\n");
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    /// <summary>
    /// The upstream: static answers of both dialects, at once, or (<paramref name="delayMs"/>, <paramref name="paceMs"/>)
    /// like a model: the JSON answer after a delay, a stream of <paramref name="deltas"/> deltas paced apart.
    /// </summary>
    public static async Task RunAsync(int port, int delayMs = 0, int deltas = 5, int paceMs = 0)
    {
        var builder = WebApplication.CreateSlimBuilder([$"--urls=http://127.0.0.1:{port}"]);
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.MapGet("/ready", () => "ok");
        var paced = paceMs > 0 || deltas != 5;
        var (openAiSse, anthropicSse) = paced ? (PacedOpenAi(deltas), PacedAnthropic(deltas)) : ([Sse], [AnthropicSse]);
        app.MapPost("/v1/chat/completions", (HttpContext ctx) => AnswerAsync(ctx, Json, openAiSse, delayMs, paceMs));
        app.MapPost("/v1/responses", (HttpContext ctx) => AnswerAsync(ctx, ResponsesJson, [ResponsesSse], delayMs, paceMs));
        app.MapPost("/v1/messages", (HttpContext ctx) => AnswerAsync(ctx, AnthropicJson, anthropicSse, delayMs, paceMs));
        await app.RunAsync();
    }

    private static async Task AnswerAsync(HttpContext ctx, byte[] json, byte[][] sse, int delayMs, int paceMs)
    {
        var buf = new byte[64 * 1024];
        var n = 0;
        int r;
        while ((r = await ctx.Request.Body.ReadAsync(buf.AsMemory(n))) > 0) n += r;
        var stream = buf.AsSpan(0, n).IndexOf("\"stream\":true"u8) >= 0;
        ctx.Response.ContentType = stream ? "text/event-stream" : "application/json";
        if (!stream)
        {
            if (delayMs > 0) await Task.Delay(delayMs);
            ctx.Response.ContentLength = json.Length;
            await ctx.Response.Body.WriteAsync(json);
            return;
        }
        if (sse.Length == 1)
        {
            ctx.Response.ContentLength = sse[0].Length;
            await ctx.Response.Body.WriteAsync(sse[0]);
            return;
        }
        // paced: each part flushed on its own, the deltas paceMs apart
        for (var i = 0; i < sse.Length; i++)
        {
            if (i > 0 && paceMs > 0) await Task.Delay(paceMs);
            await ctx.Response.Body.WriteAsync(sse[i]);
            await ctx.Response.Body.FlushAsync();
        }
    }

    private static readonly byte[] AnthropicJson = Encoding.UTF8.GetBytes("""{"id":"msg_static","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001","content":[{"type":"text","text":"Paris."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":31,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3,"service_tier":"standard"}}""");

    private static readonly byte[] AnthropicSse = Concat(PacedAnthropic(5));

    private static byte[] Concat(byte[][] parts) => parts.SelectMany(p => p).ToArray();

    /// <summary>An OpenAI stream in parts: the role chunk with the first delta, one part per further delta, then finish, usage and [DONE].</summary>
    private static byte[][] PacedOpenAi(int deltas)
    {
        const string head = "{\"id\":\"chatcmpl-paced\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_static\",";
        var parts = new List<byte[]>();
        for (var i = 0; i < deltas; i++)
        {
            var sb = new StringBuilder();
            if (i == 0) sb.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n");
            sb.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word").Append(i).Append("\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n");
            if (i == deltas - 1)
            {
                sb.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n");
                sb.Append("data: ").Append(head).Append("\"choices\":[],\"usage\":{\"prompt_tokens\":31,\"completion_tokens\":").Append(deltas).Append(",\"total_tokens\":").Append(31 + deltas).Append(",\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n");
                sb.Append("data: [DONE]\n\n");
            }
            parts.Add(Encoding.UTF8.GetBytes(sb.ToString()));
        }
        return [.. parts];
    }

    /// <summary>An Anthropic stream in parts: message_start and the block start with the first delta, one part per further delta, then the ends and the usage.</summary>
    private static byte[][] PacedAnthropic(int deltas)
    {
        var parts = new List<byte[]>();
        for (var i = 0; i < deltas; i++)
        {
            var sb = new StringBuilder();
            if (i == 0)
            {
                sb.Append("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_paced\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5-20251001\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":31,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n");
                sb.Append("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
            }
            sb.Append("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" word").Append(i).Append("\"}}\n\n");
            if (i == deltas - 1)
            {
                sb.Append("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
                sb.Append("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":").Append(deltas).Append("}}\n\n");
                sb.Append("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            }
            parts.Add(Encoding.UTF8.GetBytes(sb.ToString()));
        }
        return [.. parts];
    }
}

internal static class Runner
{
    private const string Body = """{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}""";
    private const string CachedBody = """{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":16}""";
    private const string StreamBody = """{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"What is the capital of France?"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}""";
    private const string ResponsesBody = """{"model":"gpt-4o-mini","instructions":"You answer briefly.","input":"What is the capital of France?","max_output_tokens":16}""";
    private const string ResponsesStreamBody = """{"model":"gpt-4o-mini","instructions":"You answer briefly.","input":"What is the capital of France?","max_output_tokens":16,"stream":true}""";

    public static async Task<int> RunAsync(int seconds, int[] concurrencies, int basePort)
    {
        var (up, gw, gwb) = (basePort, basePort + 1, basePort + 2);
        var self = typeof(Runner).Assembly.Location;
        var data = Path.Combine(Path.GetTempPath(), "bursar-loadbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(data);
        var store = new SqliteStore(Path.Combine(data, "bursar.db"));
        var secret = VirtualKey.NewSecret();
        await store.AddAsync(new VirtualKey { Id = "key_bench", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), Team = "bench", Customer = "acme", CreatedAt = TimeProvider.System.GetUtcNow() }, default);
        // a second gateway on its own data directory with budgets that apply to every call (global, team, customer, key)
        var dataBudgets = data + "-budgets";
        var storeBudgets = new SqliteStore(Path.Combine(dataBudgets, "bursar.db"));
        await storeBudgets.AddAsync(new VirtualKey { Id = "key_bench", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), Team = "bench", Customer = "acme", CreatedAt = TimeProvider.System.GetUtcNow() }, default);
        await storeBudgets.UpsertBudgetAsync(new BudgetDefinition { Id = "g", Scope = BudgetScope.Global, Period = BudgetPeriod.Month, LimitUsd = 1_000_000m }, default);
        await storeBudgets.UpsertBudgetAsync(new BudgetDefinition { Id = "t", Scope = BudgetScope.Team, Value = "bench", Period = BudgetPeriod.Day, LimitUsd = 1_000_000m }, default);
        await storeBudgets.UpsertBudgetAsync(new BudgetDefinition { Id = "c", Scope = BudgetScope.Customer, Value = "acme", Period = BudgetPeriod.Month, LimitUsd = 1_000_000m, TimeZone = "Europe/Paris" }, default);
        await storeBudgets.UpsertBudgetAsync(new BudgetDefinition { Id = "k", Scope = BudgetScope.Key, Value = "key_bench", Period = BudgetPeriod.Hour, LimitUsd = 1_000_000m }, default);

        using var upstream = Spawn(self, $"upstream --port {up}");
        using var gateway = Spawn(self, $"gateway --port {gw} --upstream http://127.0.0.1:{up} --data {data}");
        using var gatewayBudgets = Spawn(self, $"gateway --port {gwb} --upstream http://127.0.0.1:{up} --data {dataBudgets}");
        try
        {
            using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024, UseProxy = false, PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = TimeSpan.FromSeconds(30) };
            await WaitReady(http, $"http://127.0.0.1:{up}/ready");
            await WaitReady(http, $"http://127.0.0.1:{gw}/health/live");
            await WaitReady(http, $"http://127.0.0.1:{gwb}/health/live");

            // warm up both paths (JIT tiering, connection pools) before anything is recorded
            foreach (var st in new[] { false, true })
            {
                await Load(http, $"http://127.0.0.1:{up}/v1/chat/completions", null, st, 4, 2);
                await Load(http, $"http://127.0.0.1:{gw}/v1/chat/completions", secret, st, 4, 2);
                await Load(http, $"http://127.0.0.1:{gwb}/v1/chat/completions", secret, st, 4, 2);
                var rb = st ? ResponsesStreamBody : ResponsesBody;
                await Load(http, $"http://127.0.0.1:{up}/v1/responses", null, st, 4, 2, rb);
                await Load(http, $"http://127.0.0.1:{gw}/v1/responses", secret, st, 4, 2, rb);
                await Load(http, $"http://127.0.0.1:{gwb}/v1/responses", secret, st, 4, 2, rb);
            }
            Console.WriteLine($"Bursar loopback load benchmark, {TimeProvider.System.GetUtcNow():yyyy-MM-dd}, {Environment.ProcessorCount} cores, {seconds} s per cell after a 1 s warm-up; DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS={Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") ?? "unset"}");
            Console.WriteLine();
            Console.WriteLine("| mode | concurrency | direct p50 ms | gateway p50 ms | added p50 ms | +4 budgets p50 ms | budgets added ms | direct p99 ms | gateway p99 ms | +budgets p99 ms | direct req/s | gateway req/s | +budgets req/s | errors |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var stream in new[] { false, true })
            {
                foreach (var c in concurrencies)
                {
                    var direct = await Load(http, $"http://127.0.0.1:{up}/v1/chat/completions", null, stream, c, seconds);
                    var through = await Load(http, $"http://127.0.0.1:{gw}/v1/chat/completions", secret, stream, c, seconds);
                    var budgeted = await Load(http, $"http://127.0.0.1:{gwb}/v1/chat/completions", secret, stream, c, seconds);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {(stream ? "stream" : "json")} | {c} | {direct.P50:F3} | {through.P50:F3} | {through.P50 - direct.P50:F3} | {budgeted.P50:F3} | {budgeted.P50 - through.P50:F3} | {direct.P99:F3} | {through.P99:F3} | {budgeted.P99:F3} | {direct.Rps:F0} | {through.Rps:F0} | {budgeted.Rps:F0} | {direct.Errors + through.Errors + budgeted.Errors} |"));
                }
            }
            // the Responses API through the same gateways in the same run: the same question, JSON and the typed event stream
            Console.WriteLine();
            Console.WriteLine("| /v1/responses | concurrency | direct p50 ms | gateway p50 ms | added p50 ms | +4 budgets p50 ms | budgets added ms | direct p99 ms | gateway p99 ms | +budgets p99 ms | direct req/s | gateway req/s | +budgets req/s | errors |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var stream in new[] { false, true })
            {
                var rb = stream ? ResponsesStreamBody : ResponsesBody;
                foreach (var c in concurrencies)
                {
                    var direct = await Load(http, $"http://127.0.0.1:{up}/v1/responses", null, stream, c, seconds, rb);
                    var through = await Load(http, $"http://127.0.0.1:{gw}/v1/responses", secret, stream, c, seconds, rb);
                    var budgeted = await Load(http, $"http://127.0.0.1:{gwb}/v1/responses", secret, stream, c, seconds, rb);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {(stream ? "stream" : "json")} | {c} | {direct.P50:F3} | {through.P50:F3} | {through.P50 - direct.P50:F3} | {budgeted.P50:F3} | {budgeted.P50 - through.P50:F3} | {direct.P99:F3} | {through.P99:F3} | {budgeted.P99:F3} | {direct.Rps:F0} | {through.Rps:F0} | {budgeted.Rps:F0} | {direct.Errors + through.Errors + budgeted.Errors} |"));
                }
            }
            // the exact-cache hit path: identical temperature-0 requests, answered by the gateway without an upstream call
            Console.WriteLine();
            Console.WriteLine("| exact-cache hits | concurrency | direct upstream p50 ms | gateway hit p50 ms | direct p99 ms | gateway hit p99 ms | direct req/s | gateway hit req/s | errors |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var c in concurrencies)
            {
                var direct = await Load(http, $"http://127.0.0.1:{up}/v1/chat/completions", null, false, c, seconds, CachedBody);
                var hits = await Load(http, $"http://127.0.0.1:{gw}/v1/chat/completions", secret, false, c, seconds, CachedBody);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| json, temperature 0 | {c} | {direct.P50:F3} | {hits.P50:F3} | {direct.P99:F3} | {hits.P99:F3} | {direct.Rps:F0} | {hits.Rps:F0} | {direct.Errors + hits.Errors} |"));
            }
            await Task.Delay(1500);
            Console.WriteLine();
            Console.WriteLine($"Ledger records written by the gateway: {await store.CountAsync(default)}");
            return 0;
        }
        finally
        {
            Kill(gateway);
            Kill(gatewayBudgets);
            Kill(upstream);
            // the two ledgers grow by hundreds of MB per run: leave nothing behind
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var dir in new[] { data, dataBudgets })
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>
    /// This build's gateway and another build's (<paramref name="other"/>: its Bursar.LoadBench.dll) on one upstream,
    /// concurrency 1, JSON and SSE, in alternating rounds: the median added p50 of each build and their ratio.
    /// </summary>
    public static async Task<int> CompareAsync(string other, int rounds, int seconds, int basePort)
    {
        if (!File.Exists(other)) throw new ArgumentException($"--other must name the other build's Bursar.LoadBench.dll (not found: '{other}').");
        var (up, gwThis, gwOther) = (basePort, basePort + 1, basePort + 2);
        var self = typeof(Runner).Assembly.Location;
        var secret = VirtualKey.NewSecret();
        var dirs = new List<string>();
        async Task<string> DataAsync()
        {
            var dir = Path.Combine(Path.GetTempPath(), "bursar-compare-" + Guid.NewGuid().ToString("N")[..8]);
            Directory.CreateDirectory(dir);
            dirs.Add(dir);
            var store = new SqliteStore(Path.Combine(dir, "bursar.db"));
            await store.AddAsync(new VirtualKey { Id = "key_bench", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), Team = "bench", Customer = "acme", CreatedAt = TimeProvider.System.GetUtcNow() }, default);
            return dir;
        }
        using var upstream = Spawn(self, $"upstream --port {up}");
        using var mine = Spawn(self, $"gateway --port {gwThis} --upstream http://127.0.0.1:{up} --data {await DataAsync()}");
        using var theirs = Spawn(other, $"gateway --port {gwOther} --upstream http://127.0.0.1:{up} --data {await DataAsync()}");
        try
        {
            using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64, UseProxy = false, PooledConnectionLifetime = Timeout.InfiniteTimeSpan }) { Timeout = TimeSpan.FromSeconds(30) };
            await WaitReady(http, $"http://127.0.0.1:{up}/ready");
            await WaitReady(http, $"http://127.0.0.1:{gwThis}/health/live");
            await WaitReady(http, $"http://127.0.0.1:{gwOther}/health/live");
            foreach (var st in new[] { false, true })
                foreach (var port in new[] { up, gwThis, gwOther })
                    await Load(http, $"http://127.0.0.1:{port}/v1/chat/completions", port == up ? null : secret, st, 1, 3);
            Console.WriteLine($"Two builds in one run, {TimeProvider.System.GetUtcNow():yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, concurrency 1, {rounds} rounds of {seconds} s per path (after a 1 s warm-up), alternating");
            Console.WriteLine($"  this build:  {self}");
            Console.WriteLine($"  other build: {other}");
            Console.WriteLine();
            Console.WriteLine("| mode | this build added p50 (per round) | median | other build added p50 (per round) | median | this / other |");
            Console.WriteLine("|---|---|---:|---|---:|---:|");
            foreach (var stream in new[] { false, true })
            {
                var a = new List<double>();
                var b = new List<double>();
                for (var r = 0; r < rounds; r++)
                {
                    // the order alternates so neither build always runs right after the direct path
                    var direct = await Load(http, $"http://127.0.0.1:{up}/v1/chat/completions", null, stream, 1, seconds);
                    var first = r % 2 == 0 ? gwThis : gwOther;
                    var one = await Load(http, $"http://127.0.0.1:{first}/v1/chat/completions", secret, stream, 1, seconds);
                    var two = await Load(http, $"http://127.0.0.1:{(first == gwThis ? gwOther : gwThis)}/v1/chat/completions", secret, stream, 1, seconds);
                    var (x, y) = first == gwThis ? (one, two) : (two, one);
                    a.Add(x.P50 - direct.P50);
                    b.Add(y.P50 - direct.P50);
                }
                double Median(List<double> v) { var s = v.Order().ToArray(); return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2; }
                string List(List<double> v) => string.Join(", ", v.Select(d => d.ToString("F3", CultureInfo.InvariantCulture)));
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {(stream ? "stream" : "json")} | {List(a)} ms | {Median(a):F3} ms | {List(b)} ms | {Median(b):F3} ms | {Median(a) / Median(b):P0} |"));
            }
            return 0;
        }
        finally
        {
            Kill(mine);
            Kill(theirs);
            Kill(upstream);
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var dir in dirs)
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    internal sealed record Result(double P50, double P99, double Rps, long Errors);

    internal static async Task<Result> Load(HttpClient http, string url, string? key, bool stream, int concurrency, int seconds, string? bodyOverride = null)
    {
        var body = Encoding.UTF8.GetBytes(bodyOverride ?? (stream ? StreamBody : Body));
        var (all, errors) = await LoadLoop.RunAsync(http, () =>
        {
            var req = new HttpRequestMessage(HttpMethod.Post, url) { Content = new ByteArrayContent(body) };
            req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            if (key is not null) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            return req;
        }, concurrency, seconds);
        if (all.Length == 0) return new Result(double.NaN, double.NaN, 0, errors);
        return new Result(LoadLoop.Percentile(all, 0.50), LoadLoop.Percentile(all, 0.99), all.Length / (double)seconds, errors);
    }

    internal static async Task WaitReady(HttpClient http, string url)
    {
        for (var i = 0; i < 200; i++)
        {
            try
            {
                if ((await http.GetAsync(url)).IsSuccessStatusCode) return;
            }
            catch (HttpRequestException) { }
            await Task.Delay(100);
        }
        throw new InvalidOperationException("not ready: " + url);
    }

    internal static Process Spawn(string dll, string arguments) =>
        Process.Start(new ProcessStartInfo("dotnet", $"\"{dll}\" {arguments}") { UseShellExecute = false, RedirectStandardOutput = false, RedirectStandardError = false })!;

    internal static void Kill(Process p)
    {
        try { p.Kill(entireProcessTree: true); p.WaitForExit(5000); } catch (InvalidOperationException) { }
    }
}
