using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Core.Ledger;
using Microsoft.Extensions.DependencyInjection;
using static Bursar.Gateway.Tests.BatchGatewayTests;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Cross-dialect batches: an OpenAI batch file of Claude lines runs as one Anthropic message batch, and an Anthropic message
/// batch of GPT requests as one OpenAI batch; the caller sees its own dialect's objects and result lines, each line is one
/// ledger row at the serving model's batch rate, and a line that cannot be translated is refused naming its line and field.
/// </summary>
[Collection("batch")]
public sealed class BatchCrossDialectTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-batchx-" + Guid.NewGuid().ToString("N"));
    private BatchHost _gw = null!;
    private string _key = "";

    public async Task InitializeAsync()
    {
        _gw = await BatchHost.StartAsync(_dir);
        _key = await _gw.KeyAsync();
    }

    public async Task DisposeAsync()
    {
        await _gw.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private async Task<string> ReadAsync(string path, bool anthropic = false)
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, path);
        if (anthropic) req.Headers.Add("x-api-key", _key); else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _key);
        using var resp = await _gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.True(resp.StatusCode == HttpStatusCode.OK, $"{path}: {resp.StatusCode} {text}");
        return text;
    }

    private async Task<JsonNode> AwaitBatchAsync(string path, Func<JsonNode, bool> done, bool anthropic = false)
    {
        JsonNode? b = null;
        for (var i = 0; i < 400; i++)
        {
            (_, b) = await Send(_gw.Http, HttpMethod.Get, path, _key, anthropic: anthropic);
            if (b is not null && done(b)) return b;
            await Task.Delay(25);
        }
        Assert.Fail($"{path} did not end: {b?.ToJsonString()}");
        return null!;
    }

    [Fact]
    public async Task An_OpenAI_batch_file_of_Claude_lines_runs_as_an_Anthropic_message_batch_and_answers_in_OpenAI_lines()
    {
        var jsonl = string.Join("\n",
            ChatLine("ok-1", "hello [[sim:tokens=120]]", model: "claude-haiku-4-5", maxTokens: 300),
            ChatLine("bad-2", "x [[sim:batch=error]]", model: "claude-haiku-4-5"),
            ChatLine("late-3", "y [[sim:batch=expire]]", model: "claude-haiku-4-5")) + "\n";
        var before = _gw.Simulator.RequestCount;
        var (fs, file) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", _key, Upload(jsonl), feature: "x-openai-claude");
        Assert.True(fs == HttpStatusCode.OK, file?.ToJsonString());
        Assert.Equal(before, _gw.Simulator.RequestCount); // Anthropic has no files API: Bursar keeps the file
        var fileId = file!["id"]!.GetValue<string>();
        Assert.Equal(("file", "batch"), (file["object"]!.GetValue<string>(), file["purpose"]!.GetValue<string>()));
        Assert.Equal(jsonl, await ReadAsync($"/v1/files/{fileId}/content"));

        var (bs, created) = await Send(_gw.Http, HttpMethod.Post, "/v1/batches", _key,
            Json(new JsonObject { ["input_file_id"] = fileId, ["endpoint"] = "/v1/chat/completions", ["completion_window"] = "24h", ["metadata"] = new JsonObject { ["job"] = "nightly" } }.ToJsonString()), feature: "x-openai-claude");
        Assert.True(bs == HttpStatusCode.OK, created?.ToJsonString());
        var id = created!["id"]!.GetValue<string>();
        Assert.StartsWith("batch_bsr", id);
        Assert.Equal(("batch", fileId, "nightly"), (created["object"]!.GetValue<string>(), created["input_file_id"]!.GetValue<string>(), created["metadata"]!["job"]!.GetValue<string>()));
        var state = (await _gw.Batches.FindBatchAsync(id, default))!;
        Assert.StartsWith("msgbatch_", state.UpstreamId); // the provider holds a message batch
        Assert.Equal("openai", state.Dialect);

        var batch = await AwaitBatchAsync("/v1/batches/" + id, b => b["status"]!.GetValue<string>() == "completed");
        Assert.Equal((3, 1, 2), (batch["request_counts"]!["total"]!.GetValue<int>(), batch["request_counts"]!["completed"]!.GetValue<int>(), batch["request_counts"]!["failed"]!.GetValue<int>()));
        Assert.Equal("nightly", batch["metadata"]!["job"]!.GetValue<string>());

        // every line one row, at Claude Haiku's batch rate ($0.50 / $2.50 per million), attributed to the caller, the provider's bill matched
        var rows = await _gw.RowsAsync(r => r.BatchId == id, 3);
        Assert.Equal(3, rows.Count);
        Assert.All(rows, r => Assert.Equal(("x-openai-claude", "openai", "anthropic", true), (r.Feature, r.Dialect, r.Provider!.Split(' ')[0], r.Batch)));
        var ok = rows.Single(r => r.CustomId == "ok-1");
        Assert.Equal("ok", ok.Outcome);
        Assert.InRange(ok.OutputTokens, 120, 121);
        Assert.Equal((ok.InputTokens * 0.50m + ok.OutputTokens * 2.50m) / 1_000_000m, ok.Cost);
        Assert.Equal(ok.Cost, ok.SavingBatch);
        Assert.Equal(("client_error", 0m), (rows.Single(r => r.CustomId == "bad-2").Outcome, rows.Single(r => r.CustomId == "bad-2").Cost!.Value));
        Assert.Equal(("expired", 0m), (rows.Single(r => r.CustomId == "late-3").Outcome, rows.Single(r => r.CustomId == "late-3").Cost!.Value));
        Assert.Equal(_gw.Simulator.BatchBilledUsd(state.UpstreamId!), rows.Sum(r => r.Cost));

        // the results are OpenAI batch output lines: a chat.completion for the succeeded line, errors in the error file
        var output = (await ReadAsync($"/v1/files/{batch["output_file_id"]}/content")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToArray();
        var line = Assert.Single(output);
        Assert.Equal(("ok-1", 200), (line["custom_id"]!.GetValue<string>(), line["response"]!["status_code"]!.GetValue<int>()));
        var body = line["response"]!["body"]!;
        Assert.Equal("chat.completion", body["object"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(body["choices"]![0]!["message"]!["content"]!.GetValue<string>()));
        Assert.Equal(ok.OutputTokens, body["usage"]!["completion_tokens"]!.GetValue<long>());
        var errors = (await ReadAsync($"/v1/files/{batch["error_file_id"]}/content")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToDictionary(l => l["custom_id"]!.GetValue<string>());
        Assert.Equal(2, errors.Count);
        Assert.Equal(400, errors["bad-2"]["response"]!["status_code"]!.GetValue<int>());
        Assert.Equal("invalid_request_error", errors["bad-2"]["response"]!["body"]!["error"]!["type"]!.GetValue<string>());
        Assert.Equal("batch_expired", errors["late-3"]["error"]!["code"]!.GetValue<string>());
        var (_, outFile) = await Send(_gw.Http, HttpMethod.Get, $"/v1/files/{batch["output_file_id"]}", _key);
        Assert.Equal("batch_output", outFile!["purpose"]!.GetValue<string>());

        // reading the results again bills nothing more
        await _gw.Services.GetRequiredService<Bursar.Gateway.Batch.BatchPoller>().PollOnceAsync(default);
        Assert.Equal(3, (await _gw.RowsAsync(r => r.BatchId == id, 4, waitMs: 300)).Count);
    }

    [Fact]
    public async Task An_Anthropic_message_batch_of_GPT_requests_runs_as_an_OpenAI_batch_and_answers_in_Anthropic_results()
    {
        var body = new JsonObject
        {
            ["requests"] = new JsonArray(
                new JsonObject { ["custom_id"] = "g1", ["params"] = new JsonObject { ["model"] = "gpt-4o-mini", ["max_tokens"] = 300, ["system"] = "be brief", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi [[sim:tokens=80]]" }) } },
                new JsonObject { ["custom_id"] = "g2", ["params"] = new JsonObject { ["model"] = "gpt-4o-mini", ["max_tokens"] = 300, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "no [[sim:batch=error]]" }) } }),
        }.ToJsonString();
        var (status, created) = await Send(_gw.Http, HttpMethod.Post, "/v1/messages/batches", _key, Json(body), anthropic: true, feature: "x-anthropic-gpt");
        Assert.True(status == HttpStatusCode.OK, created?.ToJsonString());
        var id = created!["id"]!.GetValue<string>();
        Assert.StartsWith("msgbatch_bsr", id);
        Assert.Equal("message_batch", created["type"]!.GetValue<string>());
        var state = (await _gw.Batches.FindBatchAsync(id, default))!;
        Assert.StartsWith("batch_", state.UpstreamId); // the provider holds an OpenAI batch

        var batch = await AwaitBatchAsync("/v1/messages/batches/" + id, b => b["processing_status"]!.GetValue<string>() == "ended", anthropic: true);
        Assert.Equal((1, 1, 0), (batch["request_counts"]!["succeeded"]!.GetValue<int>(), batch["request_counts"]!["errored"]!.GetValue<int>(), batch["request_counts"]!["processing"]!.GetValue<int>()));
        Assert.StartsWith(_gw.Http.BaseAddress!.ToString().TrimEnd('/') + $"/v1/messages/batches/{id}/results", batch["results_url"]!.GetValue<string>());

        var rows = await _gw.RowsAsync(r => r.BatchId == id, 2);
        Assert.Equal(2, rows.Count);
        var ok = rows.Single(r => r.CustomId == "g1");
        Assert.Equal(("ok", "anthropic", "openai"), (ok.Outcome, ok.Dialect, ok.Provider!.Split(' ')[0]));
        Assert.Equal((ok.InputTokens * 0.075m + ok.OutputTokens * 0.30m) / 1_000_000m, ok.Cost); // gpt-4o-mini's batch rate
        Assert.Equal(_gw.Simulator.BatchBilledUsd(state.UpstreamId!), rows.Sum(r => r.Cost));

        var results = (await ReadAsync($"/v1/messages/batches/{id}/results", anthropic: true)).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToDictionary(l => l["custom_id"]!.GetValue<string>());
        Assert.Equal(2, results.Count);
        var message = results["g1"]["result"]!;
        Assert.Equal("succeeded", message["type"]!.GetValue<string>());
        Assert.Equal("message", message["message"]!["type"]!.GetValue<string>());
        Assert.Equal("text", message["message"]!["content"]![0]!["type"]!.GetValue<string>());
        Assert.Equal(ok.OutputTokens, message["message"]!["usage"]!["output_tokens"]!.GetValue<long>());
        Assert.Equal("errored", results["g2"]["result"]!["type"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", results["g2"]["result"]!["error"]!["error"]!["type"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}\n{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"claude-haiku-4-5\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}", 2, "body.n")]
    [InlineData("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"claude-haiku-4-5\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{}}]}]}}", 1, "body.messages[0].content[0]")]
    [InlineData("{\"custom_id\":\"not a claude id!\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"claude-haiku-4-5\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}", 1, "custom_id")]
    public async Task An_OpenAI_line_Claude_cannot_take_is_refused_naming_its_line_and_field(string jsonl, int line, string field)
    {
        var before = _gw.Simulator.RequestCount;
        var (status, error) = await Send(_gw.Http, HttpMethod.Post, "/v1/files", _key, Upload(jsonl));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains($"line {line}, field '{field}'", error!["error"]!["message"]!.GetValue<string>());
        Assert.Equal(field, error["error"]!["param"]!.GetValue<string>());
        Assert.Equal(before, _gw.Simulator.RequestCount);
    }

    [Theory]
    [InlineData("""{"requests":[{"custom_id":"a","params":{"model":"gpt-4o-mini","max_tokens":5,"top_k":3,"messages":[{"role":"user","content":"x"}]}}]}""", "requests.0.params.top_k")]
    [InlineData("""{"requests":[{"custom_id":"a","params":{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"x"}]}},{"custom_id":"b","params":{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"x"}]}}]}""", "requests.1.params.model")]
    public async Task An_Anthropic_request_OpenAI_cannot_take_is_refused_naming_its_index_and_field(string body, string field)
    {
        var before = _gw.Simulator.RequestCount;
        var (status, error) = await Send(_gw.Http, HttpMethod.Post, "/v1/messages/batches", _key, Json(body), anthropic: true);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.StartsWith(field, error!["error"]!["message"]!.GetValue<string>());
        Assert.Equal(before, _gw.Simulator.RequestCount);
    }
}
