using System.Net;
using System.Text.Json.Nodes;
using Bursar.Providers.Simulator;

namespace Bursar.Gateway.Tests;

/// <summary>An upstream of the other dialect fails: the caller gets its own dialect's shape and vocabulary, not the upstream's.</summary>
[Collection(GatewayCollection.Name)]
public sealed class CrossDialectErrorTests(GatewayFixture gw)
{
    private async Task<(HttpStatusCode Status, string Text)> Send(string path, string json, string feature)
    {
        using var req = gw.Post(path, json, feature: feature);
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task The_OpenAI_endpoint_serving_Claude_never_answers_overloaded_error()
    {
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(529, RetryAfterSeconds: 0), 3);
        try
        {
            var (status, text) = await Send("/v1/chat/completions", """{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"x"}]}""", "xd-overloaded");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            Assert.DoesNotContain("overloaded_error", text);
            Assert.Equal("server_error", JsonNode.Parse(text)!["error"]!["type"]!.GetValue<string>());
        }
        finally { gw.Simulator.Options.Faults.Clear(); }
    }

    [Fact]
    public async Task The_Anthropic_endpoint_serving_GPT_answers_rate_limit_error()
    {
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(429, RetryAfterSeconds: 0), 3);
        try
        {
            var (status, text) = await Send("/v1/messages", """{"model":"gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"x"}]}""", "xd-ratelimit");
            Assert.Equal(HttpStatusCode.TooManyRequests, status);
            Assert.DoesNotContain("rate_limit_exceeded", text);
            var body = JsonNode.Parse(text)!;
            Assert.Equal("error", body["type"]!.GetValue<string>());
            Assert.Equal("rate_limit_error", body["error"]!["type"]!.GetValue<string>());
        }
        finally { gw.Simulator.Options.Faults.Clear(); }
    }

    [Fact]
    public async Task A_mid_stream_Anthropic_error_reaches_an_OpenAI_stream_as_server_error()
    {
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(200, MidStream: true));
        try
        {
            var (status, text) = await Send("/v1/chat/completions", """{"model":"claude-haiku-4-5","stream":true,"messages":[{"role":"user","content":"go on"}]}""", "xd-midstream");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Contains("\"type\":\"server_error\"", text);
            Assert.DoesNotContain("overloaded_error", text);
        }
        finally { gw.Simulator.Options.Faults.Clear(); }
    }
}
