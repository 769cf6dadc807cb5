using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace Bursar.Core.Caching.Semantic;

/// <summary>
/// Embeddings from any OpenAI-compatible <c>POST {base}/embeddings</c> endpoint (OpenAI, Azure, vLLM, Ollama, the
/// built-in Simulator), as a <see cref="IEmbeddingGenerator{TInput, TEmbedding}"/>.
/// </summary>
public sealed class OpenAIEmbeddingGenerator(HttpMessageInvoker http, Uri baseUrl, string? apiKey, string model) : IEmbeddingGenerator<string, Embedding<float>>
{
    public EmbeddingGeneratorMetadata Metadata { get; } = new("openai-compatible", baseUrl, model);

    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var inputs = values.ToArray();
        using var req = new HttpRequestMessage(HttpMethod.Post, new Uri(new Uri(baseUrl.ToString().TrimEnd('/') + "/"), "embeddings"))
        {
            Content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(new { model = options?.ModelId ?? model, input = inputs })),
        };
        req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        if (!string.IsNullOrEmpty(apiKey)) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        using var resp = await http.SendAsync(req, cancellationToken).ConfigureAwait(false);
        var body = await resp.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        if (!resp.IsSuccessStatusCode)
            throw new HttpRequestException($"Embeddings endpoint {baseUrl} answered HTTP {(int)resp.StatusCode}: {System.Text.Encoding.UTF8.GetString(body.AsSpan(0, Math.Min(300, body.Length)))}");
        using var doc = JsonDocument.Parse(body);
        var result = new Embedding<float>[inputs.Length];
        if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
            throw new HttpRequestException($"Embeddings endpoint {baseUrl} answered without a data array.");
        foreach (var item in data.EnumerateArray())
        {
            var index = item.GetProperty("index").GetInt32();
            var vector = item.GetProperty("embedding").EnumerateArray().Select(x => x.GetSingle()).ToArray();
            if (index >= 0 && index < result.Length) result[index] = new Embedding<float>(vector) { ModelId = model };
        }
        if (result.Any(r => r is null)) throw new InvalidOperationException($"Embeddings endpoint {baseUrl} returned fewer embeddings than inputs ({inputs.Length}).");
        return new GeneratedEmbeddings<Embedding<float>>(result);
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() { }
}
