using System.ClientModel;
using System.ClientModel.Primitives;
using Anthropic;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;
using Bursar.Providers.Simulator;
using Microsoft.Extensions.AI;
using OpenAI;

namespace Bursar.Extensions.AI.Tests;

/// <summary>The official OpenAI and Anthropic .NET SDKs' chat clients, pointed at the provider Simulator in-process.</summary>
public static class SdkClients
{
    public static ProviderSimulator Simulator(TimeProvider? time = null, SimulatorOptions? options = null) =>
        new(options ?? new SimulatorOptions(), time ?? TimeProvider.System, new PriceCatalog(PriceFiles.LoadBuiltIn()), new TokenCounter());

    public static IChatClient OpenAI(ProviderSimulator simulator, string model, HttpMessageHandler? wrap = null) =>
        new OpenAIClient(new ApiKeyCredential("sim"), new OpenAIClientOptions
        {
            Endpoint = new Uri("http://simulator.local/v1"),
            Transport = new HttpClientPipelineTransport(new HttpClient(Handler(simulator, wrap))),
            RetryPolicy = new ClientRetryPolicy(0),
        }).GetChatClient(model).AsIChatClient();

    public static IChatClient Anthropic(ProviderSimulator simulator, string model, HttpMessageHandler? wrap = null) =>
        new AnthropicClient
        {
            ApiKey = "sim",
            BaseUrl = "http://simulator.local",
            MaxRetries = 0,
            HttpClient = new HttpClient(Handler(simulator, wrap)),
        }.AsIChatClient(model, defaultMaxOutputTokens: 1024);

    private static HttpMessageHandler Handler(ProviderSimulator simulator, HttpMessageHandler? wrap)
    {
        var sim = new SimulatorHttpHandler(simulator);
        if (wrap is DelegatingHandler d)
        {
            d.InnerHandler = sim;
            return d;
        }
        return sim;
    }
}
