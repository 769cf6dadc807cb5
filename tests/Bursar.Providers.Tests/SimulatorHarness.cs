using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Providers.Simulator;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Providers.Tests;

/// <summary>The Simulator in-process behind an HttpClient, on a fake clock.</summary>
internal sealed class SimulatorHarness : IDisposable
{
    public FakeTimeProvider Time { get; } = new(DateTimeOffset.Parse("2026-11-23T12:00:00Z"));
    public ProviderSimulator Simulator { get; }
    public HttpClient Http { get; }

    public SimulatorHarness(SimulatorOptions? options = null)
    {
        Simulator = new ProviderSimulator(options ?? new SimulatorOptions(), Time);
        Http = new HttpClient(new SimulatorHttpHandler(Simulator)) { BaseAddress = new Uri("http://simulator/") };
    }

    public async Task<(int Status, JsonNode? Body, HttpResponseMessage Response)> PostAsync(string path, JsonObject body, bool anthropic)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        if (anthropic) req.Headers.Add("x-api-key", "k");
        else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "k");
        var resp = await Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        JsonNode? node = null;
        if (resp.Content.Headers.ContentType?.MediaType == "application/json") node = JsonNode.Parse(text);
        else node = JsonValue.Create(text);
        return ((int)resp.StatusCode, node, resp);
    }

    public Task<(int Status, JsonNode? Body, HttpResponseMessage Response)> Messages(JsonObject body) => PostAsync("/v1/messages", body, anthropic: true);

    public Task<(int Status, JsonNode? Body, HttpResponseMessage Response)> Chat(JsonObject body) => PostAsync("/v1/chat/completions", body, anthropic: false);

    public static string Words(int n, string seed = "policy") => string.Join(" ", Enumerable.Range(0, n).Select(i => $"{seed} clause {i} applies"));

    public void Dispose() => Http.Dispose();
}
