using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>
/// <c>/health/ready</c> is JSON with one object per check; the semantic encoder's says whether the model loaded, its weights, the
/// memory and time the load took. A model file that is not a model turns the semantic cache off (said there, and logged) while
/// the gateway serves every call.
/// </summary>
public sealed class SemanticEncoderHealthTests
{
    /// <summary>The ready report once the encoder is no longer loading (the gateway loads it in the background at start).</summary>
    private static async Task<JsonNode> ReadyAsync(GatewayFixture gw)
    {
        for (var i = 0; ; i++)
        {
            using var resp = await gw.Http.GetAsync("/health/ready");
            Assert.Equal("application/json", resp.Content.Headers.ContentType?.MediaType);
            var doc = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
            // 503 while the start-up warm-up runs (its own check says so), then 200
            var warming = resp.StatusCode == HttpStatusCode.ServiceUnavailable && doc["checks"]!["warm_up"]!["status"]!.GetValue<string>() != "Healthy";
            if (i == 600 || (!warming && doc["checks"]!["semantic_encoder"]!["data"]!["state"]!.GetValue<string>() != "loading"))
            {
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
                return doc;
            }
            await Task.Delay(100);
        }
    }

    private static async Task<string?> AskAsync(GatewayFixture gw, string question)
    {
        var body = new JsonObject { ["model"] = "gpt-4o-mini", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }) };
        using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", body.ToJsonString(), feature: "semantic-faq"));
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        return resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null;
    }

    [Fact]
    public async Task Ready_reports_each_check_and_the_loaded_model_with_its_memory_and_load_time()
    {
        var gw = new GatewayFixture();
        await gw.InitializeAsync();
        try
        {
            var doc = await ReadyAsync(gw);
            Assert.Equal("Healthy", doc["status"]!.GetValue<string>());
            foreach (var check in new[] { "warm_up", "store", "shared_counters", "semantic_encoder" })
                Assert.Equal("Healthy", doc["checks"]![check]!["status"]!.GetValue<string>());
            var enc = doc["checks"]!["semantic_encoder"]!;
            var data = enc["data"]!;
            Assert.Equal("loaded", data["state"]!.GetValue<string>());
            Assert.Equal("all-MiniLM-L6-v2", data["encoder"]!.GetValue<string>());
            Assert.InRange(data["model_bytes"]!.GetValue<long>(), 80_000_000, 100_000_000);
            Assert.True(data["load_ms"]!.GetValue<double>() > 0);
            Assert.True(data["load_memory_bytes"]!.GetValue<long>() >= 0);
            Assert.Contains("all-MiniLM-L6-v2", enc["description"]!.GetValue<string>());
            // the ledger store's figures are there too
            Assert.True(doc["checks"]!["store"]!["data"]!["ledger_records"]!.GetValue<long>() >= 0);
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_corrupt_model_file_turns_the_semantic_cache_off_says_why_on_ready_and_the_gateway_serves_every_call()
    {
        var dir = Directory.CreateTempSubdirectory("bursar-corrupt-model-");
        var model = Path.Combine(dir.FullName, "encoder.onnx");
        var vocab = Path.Combine(dir.FullName, "vocab.txt");
        var junk = new byte[4096];
        new Random(1).NextBytes(junk);
        File.WriteAllBytes(model, junk);
        File.WriteAllLines(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"]);
        var gw = new ConfiguredGateway(["--Bursar:SemanticCache:Generator=onnx", $"--Bursar:SemanticCache:OnnxModelPath={model}", $"--Bursar:SemanticCache:OnnxVocabPath={vocab}"]);
        await gw.InitializeAsync();
        try
        {
            var doc = await ReadyAsync(gw);
            Assert.Equal("Degraded", doc["status"]!.GetValue<string>()); // still 200: ready to serve
            var enc = doc["checks"]!["semantic_encoder"]!;
            Assert.Equal("Degraded", enc["status"]!.GetValue<string>());
            Assert.Equal("failed", enc["data"]!["state"]!.GetValue<string>());
            Assert.Contains(model, enc["data"]!["reason"]!.GetValue<string>());
            Assert.Contains("semantic cache disabled", enc["description"]!.GetValue<string>());
            // the same question twice: served both times, never from the semantic cache
            Assert.Equal("bypass", await AskAsync(gw, "How do I reset my password?"));
            Assert.NotEqual("semantic-hit", await AskAsync(gw, "How can I reset my password?"));
            Assert.Equal("Healthy", doc["checks"]!["store"]!["status"]!.GetValue<string>());
        }
        finally
        {
            await gw.DisposeAsync();
            try { dir.Delete(true); } catch (IOException) { }
        }
    }
}
